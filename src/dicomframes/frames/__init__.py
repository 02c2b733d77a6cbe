"""From a source to decoded frames: header, frame index, fetch planning, the pipeline,
worker processes, decoder backends and the Pixels step."""
