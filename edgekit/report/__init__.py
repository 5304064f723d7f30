"""`edgekit report`: one table and the accuracy-latency picture across artifacts."""
