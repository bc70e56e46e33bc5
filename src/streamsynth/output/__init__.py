"""Writing data sets and their manifests."""

from streamsynth.output.writer import build_manifest, check_output_dir, training_row, write_run

__all__ = sorted(["build_manifest", "check_output_dir", "training_row", "write_run"])
