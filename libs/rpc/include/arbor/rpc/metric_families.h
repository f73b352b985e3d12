// Registering Arbor's Prometheus metrics: one call per family or unlabelled series, so every
// service names and documents its metrics the same way (ARCHITECTURE.md §7: arbor_<service>_*).
// Registration is not thread-safe; the returned metrics are.
#pragma once

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace arbor::rpc {

prometheus::Family<prometheus::Counter>& CounterFamily(prometheus::Registry& r, const char* name,
                                                       const char* help);
prometheus::Family<prometheus::Histogram>& HistogramFamily(prometheus::Registry& r,
                                                           const char* name, const char* help);
// An unlabelled series.
prometheus::Counter& Counter(prometheus::Registry& r, const char* name, const char* help);
prometheus::Gauge& Gauge(prometheus::Registry& r, const char* name, const char* help);
prometheus::Histogram& Histogram(prometheus::Registry& r, const char* name, const char* help,
                                 prometheus::Histogram::BucketBoundaries buckets);

}  // namespace arbor::rpc
