"""`python -m tuneforge` (also what `accelerate launch -m tuneforge` runs)."""

from tuneforge.cli.app import main

main()
