"""Device test vectors: generated JSON, the build script and the expectations it applies."""
