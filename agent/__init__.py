"""Server-side activation agent (standard library only, Python >= 3.10): shipped in the user-data and
run on the servers, so nothing here may import third-party packages or newer syntax."""
