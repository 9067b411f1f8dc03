"""Face detection and alignment: landmarks to a fixed template, and the aligned-face cache."""
