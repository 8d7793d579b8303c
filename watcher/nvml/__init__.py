"""NVML: device reads, the sampler and the XID event thread."""
