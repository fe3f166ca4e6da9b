"""Dataset readers, few-shot split, transforms and synthetic products."""
