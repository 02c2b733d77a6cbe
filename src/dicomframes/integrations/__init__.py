"""dicomframes inside other tools: Dask arrays from paths (`to_dask`) and the data-loader
dataset (`FrameDataset`)."""
