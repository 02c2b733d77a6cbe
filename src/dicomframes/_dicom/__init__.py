"""DICOM encoding facts with no I/O: tags and VRs, transfer syntaxes, codestream parameters."""
