/*
 * budget.h - the planner of the shared Constant Contact budget. Every
 * association reaches CC through one application key: 4 requests a second and
 * a daily limit (10,000) shared by all of them. Spent first-come, polling alone
 * would use the day up at a few dozen associations; so the day is planned.
 *
 * Pure, like plan.h: no I/O, no clock, no global state. The caller gathers a
 * snapshot (today's use, each association's waiting work, the recent rate) from
 * Redis and asks:
 *   - who may spend the next request (budget_pick),
 *   - how long a group's changes should wait before they are sent
 *     (budget_sync_delay_ms),
 *   - how often an association's lists are checked (budget_reconcile_interval_s),
 *   - what daily limit the present workload would need (budget_needed_daily_limit).
 * The rules and their reasons are at the top of service/budget.c.
 */
#ifndef CCSYNC_BUDGET_H
#define CCSYNC_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Kinds of work, in priority order. */
enum budget_class {
    BUDGET_CHANGES = 0, /* 1: member changes to synced groups, list creates and deletes */
    BUDGET_FULL_SYNC,   /* 2: first syncs and resyncs */
    BUDGET_RECONCILE,   /* 3: looking for deleted or renamed lists */
    BUDGET_REFRESH,     /* 4: work that only refreshes counts (read-backs, activity checks
                           whose outcome is not needed to go on) */
    BUDGET_CLASSES
};

/* The name a class goes by in status and metrics: changes, full_sync,
 * reconcile, refresh. */
const char *budget_class_name(enum budget_class cls);

#define BUDGET_DAY_SECONDS 86400

/* Fractions of the daily limit that shape the day. */
#define BUDGET_CALM 0.80    /* projected use under this: changes wait only the base delay */
#define BUDGET_CEILING 0.95 /* never planned past this; the rest is a reserve for class 1 */

/* The day so far, for every association together. */
struct budget_day {
    long limit;                         /* requests a UTC day (CCSYNC_CC_DAILY_LIMIT), > 0 */
    long used;                          /* granted so far today */
    long used_by_class[BUDGET_CLASSES]; /* the same, by class */
    int64_t now_s;                      /* seconds since 00:00 UTC, 0..86399 */
    double recent_rate;                 /* requests a second over the last minutes */
    double one_off_rate;                /* the part of recent_rate spent by first syncs and
                                           read-backs (classes 2 and 4): jobs that end, so
                                           projected over BUDGET_RATE_WINDOW_S at most */
    double reconcile_share;             /* CCSYNC_RECONCILE_BUDGET_SHARE, 0..1 */
};

/* One association's side of the snapshot. */
struct budget_assoc {
    long pending[BUDGET_CLASSES]; /* requests its waiting work needs, by class (estimates) */
    long used_today;              /* requests it was granted today */
    double weight;             /* its share beside the others' (1 = an equal share; <= 0 reads 1) */
    int64_t last_served_ms;    /* when it last got a request (older goes first on a tie) */
    int64_t last_reconcile_ms; /* when its lists were last read (class 3): within reconcile,
                                  the least recently reconciled goes first (0 = never) */
};

/* used + the recent rate × the seconds left today (one_off_rate over at most
 * BUDGET_RATE_WINDOW_S of them: a 50,000-member first sync's read-back is not
 * the day's pace). */
double budget_projected(const struct budget_day *d);

/*
 * The most requests association i may have today when the day is short, its
 * fair share: the day's limit divided by max-min fairness over what each
 * association needs (used today + pending), so a share one association does not
 * need goes to the others. LONG_MAX when everyone's need fits the day.
 */
long budget_fair_share(const struct budget_day *d, const struct budget_assoc *a, size_t n,
                       size_t i);

/* True when today's use plus the work waiting, or the projection, passes the
 * ceiling: then fair shares bind. */
bool budget_is_short(const struct budget_day *d, const struct budget_assoc *a, size_t n);

/*
 * Who may spend the next request: the index of an association, with the class
 * of its work in *cls, or -1 when nobody may spend one now (the day is used up,
 * or only work waits that must leave the reserve alone). Classes go in priority
 * order; within a class the association that has used least of its share goes
 * first (ties: served longest ago, then the lower index), so when the day is
 * short an association past its fair share waits while another has class-1 work.
 * Within reconcile (class 3) the least recently reconciled goes first instead:
 * what it costs is one read per association per turn, and a turn that waits
 * behind the associations that used less would never come for a busy one.
 */
int budget_pick(const struct budget_day *d, const struct budget_assoc *a, size_t n,
                enum budget_class *cls);

/* The window over which the caller measures recent_rate (an exponential
 * average with this time constant). */
#define BUDGET_RATE_WINDOW_S 600.0

/* How many times over what the rest of the day affords the recent rate runs. */
double budget_pressure(const struct budget_day *d);

/*
 * How long a group's changes wait to be coalesced, updated from the wait in
 * force (current_ms) elapsed_s after it was last set: base_ms while the
 * projection stays under BUDGET_CALM of the limit; above, the wait grows (or
 * shrinks) by the pressure, a full step per BUDGET_RATE_WINDOW_S, within
 * base_ms..max_ms.
 */
int64_t budget_sync_delay_ms(const struct budget_day *d, int64_t current_ms, double elapsed_s,
                             int64_t base_ms, int64_t max_ms);

/*
 * May an association start a sync round of about cost requests now, with
 * pending requests already queued by rounds in flight? True while what is
 * committed plus the recent rate over the rest of the day stays under the
 * ceiling (past the ceiling: under the limit, for class-1 work only). A round
 * that may not start waits and keeps gathering changes.
 */
bool budget_may_start_round(const struct budget_day *d, long pending, long cost);

/*
 * May an association's due groups start a round now, with the coalescing wait
 * at delay_ms of its widest max_ms? Rounds are paced (budget_may_start_round)
 * once the wait is at its widest, or once the day's use has passed BUDGET_CALM:
 * before either, the widening wait is what keeps the day, and a burst of work
 * (twenty associations' first lists at once) that raises the recent rate for a
 * while does not stop every round; past calm, a wait still widening must not
 * let rounds run the day into its reserve meanwhile.
 */
bool budget_round_allowed(const struct budget_day *d, int64_t delay_ms, int64_t max_ms,
                          long pending, long cost);

/* What a sync round costs at least: a send, a report on it, often a read. */
#define BUDGET_ROUND_COST 3

/*
 * Seconds between two reconciles of an association: reconcile spends at most
 * reconcile_share of the day, spread over it. cost_idle and cost_busy are the
 * requests one round of reconciles costs, summed over the idle associations and
 * over those with recent errors or activity (one request a page of 500 lists).
 * The interval gives every association an equal turn with the whole share;
 * *busy_s (half of it, never below the floor) is how soon a busy one may have an
 * extra turn out of what the equal turns leave (budget_reconcile_allowed). Never
 * below floor_s (CCSYNC_RECONCILE_SECONDS).
 */
int64_t budget_reconcile_interval_s(const struct budget_day *d, long cost_idle, long cost_busy,
                                    int64_t floor_s, int64_t *busy_s);

/* May a reconcile request be spent now? Reconcile's share is spread over the
 * day: by now it may have used its share of the elapsed day plus an hour's. */
bool budget_reconcile_allowed(const struct budget_day *d);

/*
 * The daily limit the present workload would need for changes to reach CC
 * within latency_s: sync_rate is the recent rate of class 1 and 2 requests
 * (a second) while changes waited delay_ms, other_rate the rest. Coalescing over
 * a shorter wait costs proportionally more windows.
 */
long budget_needed_daily_limit(double sync_rate, double other_rate, int64_t delay_ms,
                               int64_t latency_s);

#endif
