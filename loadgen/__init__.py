"""embed-loadgen: publish documents to the input topic (and, later, measure the fleet)."""
