"""Statistics of a model computed before an edit or a training run: parameter importances (SSD, FILA), neighbour
searches, concept analysis and target distributions. Methods build their recipes from them (and metrics or selectors
may); they import no method, and every data pass they take is recorded with ``cost.record``."""
