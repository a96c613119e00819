"""Prometheus metrics for /metrics, in a registry of the daemon's own (no global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401 - re-exported
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_RTF_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("ishowtts_requests", "HTTP speech requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("ishowtts_request_latency_seconds", "Request latency, arrival to last byte",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.rtf = Histogram("ishowtts_rtf", "Real-time factor: synthesis seconds per audio second",
                             buckets=_RTF_BUCKETS, registry=r)
        self.ttfa = Histogram("ishowtts_time_to_first_audio_seconds", "Arrival to first audio byte (streaming)",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("ishowtts_audio_seconds", "Audio seconds synthesised", registry=r)
        self.queue_depth = Gauge("ishowtts_queue_depth", "Live requests waiting for the GPU worker", registry=r)
        self.nfe = Gauge("ishowtts_nfe", "NFE steps in force for new requests", registry=r)
        self.reference_decodes = Gauge("ishowtts_reference_decodes",
                                       "Reference clips decoded from disk since start (cache misses)", registry=r)
        self.model = Info("ishowtts_model", "The loaded model", registry=r)

    def bind(self, queue_depth: Callable[[], float], nfe: Callable[[], float],
             reference_decodes: Callable[[], float]) -> None:
        self.queue_depth.set_function(queue_depth)
        self.nfe.set_function(nfe)
        self.reference_decodes.set_function(reference_decodes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
