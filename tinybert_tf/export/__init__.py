"""Publishing a student: `publish.export` writes a versioned SavedModel for TF Serving (graph in
`serving`), verifies it (`checks`) and optionally a Hugging Face checkpoint (`hf`)."""
