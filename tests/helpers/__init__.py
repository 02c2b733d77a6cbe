"""Test helpers: file generators (dicomgen, wsigen) and real servers on 127.0.0.1 (servers)."""
