/*
 * metrics.h - process-wide counters, gauges and histograms, rendered in the
 * Prometheus text format for GET /metrics. Thread safe (one mutex; updates are
 * a hash lookup and an add).
 *
 * Series are named by a metric name and a label string written as Prometheus
 * writes it, e.g. metrics_inc("ccsync_webhooks_total", "outcome=\"queued\"").
 */
#ifndef CCSYNC_METRICS_H
#define CCSYNC_METRICS_H

#include <stddef.h>

struct buf;

void metrics_add(const char *name, const char *labels, double delta);
void metrics_inc(const char *name, const char *labels);
void metrics_set(const char *name, const char *labels, double value);
/* Sets the gauge name's series to values[i] for labels[i], and every other
 * series of that name to 0, at once (a scrape never sees half of it). */
void metrics_set_all(const char *name, size_t n, const char *const *labels, const double *values);
void metrics_observe(const char *name, const char *labels, double value);
double metrics_get(const char *name, const char *labels);

/* Renders every series with HELP/TYPE lines. The caller frees *out. */
int metrics_render(char **out, size_t *out_len);

void metrics_reset(void); /* tests only */

#endif
