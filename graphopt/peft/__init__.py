"""Parameter-efficient fine-tuning with principal-component nodes and GGM allocation."""
