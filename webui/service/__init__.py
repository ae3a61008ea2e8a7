"""The generation service: a FIFO job queue and the single worker that owns the device."""
