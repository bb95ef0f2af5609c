"""Export: merge a LoRA run into a standard HF folder, convert other checkpoint layouts to HF."""
