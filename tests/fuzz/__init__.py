"""Property-based fuzzing of the lab-file loader and the `provision` CLI (issue 8)."""
