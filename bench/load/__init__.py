"""Load test on real Contrackt processes: step load, worker scaling, the API's overhead (``python -m bench.load``)."""
