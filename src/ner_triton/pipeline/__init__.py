"""Build steps. Each is a function ``(settings, input_path, output_dir) -> Path`` of what it wrote."""
