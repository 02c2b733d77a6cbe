"""Views of one instance's frames that the Reader offers: tile geometry, regions and
tiles of whole-slide instances, and Dask graphs. They take a reader, never open one."""
