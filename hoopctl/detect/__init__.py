"""Pure classification: bytes -> credential findings; snapshots -> tunnel and orphan findings. No I/O."""
