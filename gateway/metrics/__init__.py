"""Gateway metrics: the Prometheus catalog, multiprocess aggregation, and model prices.

``prometheus_client`` is imported lazily (inside :class:`Metrics`), never by importing this
package: see :mod:`gateway.metrics.multiproc` for why the import moment matters.
"""

from gateway.metrics.catalog import (
    LABELS,
    Metrics,
    mean_inter_token_ms,
    metadata_label_name,
    render_multiprocess,
)
from gateway.metrics.multiproc import (
    cleanup_multiprocess_dir,
    mark_worker_dead,
    prepare_multiprocess_dir,
    use_multiprocess_values,
)
from gateway.metrics.prices import Price, PriceError, PriceTable, load_default_prices

__all__ = [
    "LABELS",
    "Metrics",
    "Price",
    "PriceError",
    "PriceTable",
    "cleanup_multiprocess_dir",
    "load_default_prices",
    "mark_worker_dead",
    "mean_inter_token_ms",
    "metadata_label_name",
    "prepare_multiprocess_dir",
    "render_multiprocess",
    "use_multiprocess_values",
]
