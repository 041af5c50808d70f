"""pccs package."""
