"""DICOMweb services as sources: search them, open their instances as readers and their series as slides."""

from dicomframes.web.client import DicomWeb, dicomweb

__all__ = ["DicomWeb", "dicomweb"]
