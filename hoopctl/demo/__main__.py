"""Runs the demo: `python -m hoopctl.demo`."""

from hoopctl.demo.story import main

if __name__ == "__main__":
    raise SystemExit(main())
