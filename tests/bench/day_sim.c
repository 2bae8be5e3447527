/*
 * day_sim.c - a simulated day of the shared Constant Contact budget: the real
 * budget planner (service/budget.c) deciding, second by second, who spends the
 * next of 4 requests a second and 10,000 a day, for hundreds of associations.
 *
 * A discrete-event simulation with a simulated clock, so a day takes seconds.
 * The workload, per association: 10 synced groups of 2,000 members; 1% of the
 * members change a day (Poisson, 80% of them in office hours 08:00-18:00 UTC),
 * each change joining or leaving one group; 5 recalculations of a 2,000-member
 * group a day per 100 associations (200 members change at once); one
 * 50,000-member first sync at 09:00; one list deleted in CC per 100
 * associations at a random time.
 *
 * Costs follow the sync round (service/round.c): a round of one association's
 * due groups costs one import per list with joins, one removal request if any
 * member left, and one activity check; a first sync of N members costs a list
 * create, N/40,000 imports, a check and N/500 read-back pages (class 4); a
 * reconcile costs one request. A sync touching a list deleted in CC finds it
 * (404) at no extra cost.
 *
 * Each size runs twice on the same day (same random draws): first-come, as
 * ccsync spent the budget before the planner (a fixed 1 s wait, reconcile every
 * 300 s, requests in turn until CC answers quota_exceeded), and planned.
 *
 * Printed per size: requests by class, quota exhaustions, change-to-CC latency
 * (p50, p99, max; the worst association's p99 beside the median's), how long a
 * deleted list went unnoticed, and two bounds for the same workload: the
 * cheapest request count for the latency ccsync reached, and the best p99 any
 * schedule could reach within the day.
 *
 *   day_sim [ASSOCIATIONS...]     (default 10 100 500 2000)
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccsync/budget.h"

#define GROUPS 10
#define MEMBERS 2000
#define RATE 4.0
#define LIMIT 10000
#define TICK_MS 250 /* 1 / RATE */
#define DAY_MS (86400LL * 1000)
#define BASE_DELAY_MS 1000
#define MAX_DELAY_MS 3600000
#define RECONCILE_FLOOR_S 300
#define BUSY_WINDOW_MS (3600LL * 1000)
#define RATE_TAU_S 600.0

struct group {
    int64_t *arrivals; /* changes waiting, by arrival time */
    size_t n, cap;
    int joins, leaves;
    int64_t due_ms; /* 0: nothing waiting */
    bool deleted;   /* the list was deleted in CC */
    int64_t deleted_at;
};

struct association {
    struct group g[GROUPS];
    /* the round in flight: its changes land when its class-1 requests are spent */
    int64_t *flight;
    size_t n_flight, cap_flight;
    long round_left;
    int64_t next_due_ms; /* the earliest due_ms of its groups, 0 when none */
    int64_t next_reconcile_ms;
    int64_t last_activity_ms;
};

/* One change, logged to price the cheapest schedule afterwards. */
struct change {
    int64_t at;
    int assoc;
    signed char group;
    bool join;
};

struct sample {
    int assoc;
    double latency_s;
};

struct sim {
    size_t n;
    struct association *a;
    struct budget_assoc *b; /* the planner's view, b[i] for association i */
    size_t *due;            /* scratch: associations due this second */
    struct budget_day day;
    int64_t now;
    struct sample *lat;
    size_t n_lat, cap_lat;
    double *detect_s; /* noticed deletions' delays, then the unnoticed ones' waits so far */
    size_t n_detect, cap_detect, n_unnoticed;
    struct change *log;
    size_t n_log, cap_log;
    long quota_refusals; /* ticks when class-1 work met a used-up day */
    long pending_total;
    int64_t delay_ms; /* the coalescing wait in force */
    bool first_come;  /* the baseline: today's first-come spending, no planner */
    size_t turn;      /* first_come: round-robin position */
    unsigned long long rng;
};

/* ---- randomness (xorshift: the same day every run) ---- */

static double uniform(struct sim *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return (double)(s->rng >> 11) / 9007199254740992.0;
}

/* Office hours weigh four times the rest: 80% of a day's changes in 10 hours. */
static double hour_weight(int64_t t_ms)
{
    int hour = (int)(t_ms / 3600000 % 24);
    return hour >= 8 && hour < 18 ? 0.8 / 10.0 : 0.2 / 14.0;
}

static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * size);
    if (!q) {
        perror("day_sim");
        exit(1);
    }
    *cap = c;
    return q;
}

/* ---- changes arriving ---- */

static void add_change(struct sim *s, size_t i, int gi, bool join)
{
    struct association *as = &s->a[i];
    struct group *g = &as->g[gi];
    s->log = grow(s->log, &s->cap_log, s->n_log + 1, sizeof *s->log);
    s->log[s->n_log++] = (struct change){s->now, (int)i, (signed char)gi, join};
    g->arrivals = grow(g->arrivals, &g->cap, g->n + 1, sizeof *g->arrivals);
    g->arrivals[g->n++] = s->now;
    if (join)
        g->joins++;
    else
        g->leaves++;
    if (!g->due_ms) {
        g->due_ms = s->now + s->delay_ms;
        if (!as->next_due_ms || g->due_ms < as->next_due_ms)
            as->next_due_ms = g->due_ms;
    }
    as->last_activity_ms = s->now;
}

/* Poisson arrivals over one tick, for every association together. */
static void arrive(struct sim *s)
{
    double per_day = 0.01 * MEMBERS; /* 1% of an association's members change a day */
    double mean = per_day * hour_weight(s->now) * TICK_MS / 3600000.0 * (double)s->n;
    double limit = exp(-mean), p = uniform(s);
    while (p > limit) { /* Knuth's method: mean is small (a few a tick at most) */
        size_t i = (size_t)(uniform(s) * (double)s->n);
        add_change(s, i, (int)(uniform(s) * GROUPS), uniform(s) < 0.7);
        p *= uniform(s);
    }
}

static void recalculate(struct sim *s, size_t i)
{
    int gi = (int)(uniform(s) * GROUPS);
    for (int k = 0; k < MEMBERS / 10; k++)
        add_change(s, i, gi, k % 2 == 0);
}

/* ---- rounds ---- */

static void found_deleted(struct sim *s, struct group *g)
{
    if (!g->deleted || g->deleted_at < 0)
        return;
    s->detect_s = grow(s->detect_s, &s->cap_detect, s->n_detect + 1, sizeof *s->detect_s);
    s->detect_s[s->n_detect++] = (double)(s->now - g->deleted_at) / 1000.0;
    g->deleted_at = -1; /* noticed: an error until an admin resyncs */
}

/* Moves group g's waiting changes into the round; false when it has none due. */
static bool take_group(struct sim *s, struct association *as, struct group *g, long *lists,
                       long *removes)
{
    if (!g->due_ms)
        return false; /* a round takes every group with changes: they share its check */
    if (g->deleted) { /* the sync's request answers 404: noticed at no cost */
        found_deleted(s, g);
    } else {
        as->flight = grow(as->flight, &as->cap_flight, as->n_flight + g->n, sizeof *as->flight);
        memcpy(as->flight + as->n_flight, g->arrivals, g->n * sizeof *g->arrivals);
        as->n_flight += g->n;
        *lists += g->joins > 0;
        *removes += g->leaves > 0;
    }
    g->n = 0;
    g->joins = g->leaves = 0;
    g->due_ms = 0;
    return true;
}

static void start_round(struct sim *s, size_t i)
{
    struct association *as = &s->a[i];
    long lists = 0, removes = 0;
    as->next_due_ms = 0;
    for (int gi = 0; gi < GROUPS; gi++) {
        struct group *g = &as->g[gi];
        take_group(s, as, g, &lists, &removes);
        if (g->due_ms && (!as->next_due_ms || g->due_ms < as->next_due_ms))
            as->next_due_ms = g->due_ms;
    }
    if (!as->n_flight)
        return;
    as->round_left = lists + (removes > 0) + 1; /* imports, one merged removal, one check */
    s->b[i].pending[BUDGET_CHANGES] += as->round_left;
    s->pending_total += as->round_left;
}

static void land_round(struct sim *s, struct association *as)
{
    int idx = (int)(as - s->a);
    s->lat = grow(s->lat, &s->cap_lat, s->n_lat + as->n_flight, sizeof *s->lat);
    for (size_t k = 0; k < as->n_flight; k++)
        s->lat[s->n_lat++] = (struct sample){idx, (double)(s->now - as->flight[k]) / 1000.0};
    as->n_flight = 0;
}

/* ---- the budget ---- */

static void schedule_reconciles(struct sim *s)
{
    long idle = 0, busy = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->a[i].last_activity_ms && s->now - s->a[i].last_activity_ms < BUSY_WINDOW_MS)
            busy++;
        else
            idle++;
    }
    int64_t busy_s,
        idle_s = budget_reconcile_interval_s(&s->day, idle, busy, RECONCILE_FLOOR_S, &busy_s);
    if (s->first_come)
        idle_s = busy_s = RECONCILE_FLOOR_S;
    for (size_t i = 0; i < s->n; i++) {
        struct association *as = &s->a[i];
        bool is_busy = as->last_activity_ms && s->now - as->last_activity_ms < BUSY_WINDOW_MS;
        int64_t every = (is_busy ? busy_s : idle_s) * 1000;
        if (!as->next_reconcile_ms)
            as->next_reconcile_ms = 1 + (int64_t)(uniform(s) * (double)every); /* spread */
        if (as->next_reconcile_ms <= s->now && s->b[i].pending[BUDGET_RECONCILE] == 0) {
            s->b[i].pending[BUDGET_RECONCILE] = 1;
            s->pending_total++;
            as->next_reconcile_ms = s->now + every;
        }
    }
}

static void spend(struct sim *s, size_t i, enum budget_class cls)
{
    struct association *as = &s->a[i];
    struct budget_assoc *b = &s->b[i];
    b->pending[cls]--;
    b->used_today++;
    b->last_served_ms = s->now;
    s->pending_total--;
    s->day.used++;
    s->day.used_by_class[cls]++;
    s->day.recent_rate += 1.0 / RATE_TAU_S;
    if (cls == BUDGET_FULL_SYNC || cls == BUDGET_REFRESH)
        s->day.one_off_rate += 1.0 / RATE_TAU_S;
    if (cls == BUDGET_RECONCILE) {
        b->last_reconcile_ms = s->now;
        for (int gi = 0; gi < GROUPS; gi++)
            found_deleted(s, &as->g[gi]);
    }
    if (cls == BUDGET_CHANGES && as->round_left > 0 && --as->round_left == 0)
        land_round(s, as);
}

/* The baseline: whoever's turn it is spends, in class order of its own work,
 * until CC answers quota_exceeded for the rest of the day. */
static int first_come_pick(struct sim *s, enum budget_class *cls)
{
    if (s->day.used >= s->day.limit)
        return -1;
    for (size_t k = 0; k < s->n; k++) {
        size_t i = (s->turn + k) % s->n;
        for (int c = 0; c < BUDGET_CLASSES; c++)
            if (s->b[i].pending[c] > 0) {
                s->turn = i + 1;
                *cls = (enum budget_class)c;
                return (int)i;
            }
    }
    return -1;
}

static void grant(struct sim *s)
{
    enum budget_class cls;
    int i = s->first_come ? first_come_pick(s, &cls) : budget_pick(&s->day, s->b, s->n, &cls);
    if (i >= 0) {
        spend(s, (size_t)i, cls);
        return;
    }
    for (size_t k = 0; k < s->n; k++)
        if (s->b[k].pending[BUDGET_CHANGES] > 0) {
            s->quota_refusals++;
            break;
        }
}

/* ---- the day ---- */

struct plan_of_day {
    int64_t *recalc; /* times of recalculations, sorted */
    size_t n_recalc, next_recalc;
    int64_t *deletion;
    size_t n_deletion, next_deletion;
};

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t *random_times(struct sim *s, size_t n)
{
    int64_t *t = calloc(n ? n : 1, sizeof *t);
    for (size_t k = 0; k < n; k++)
        t[k] = (int64_t)(uniform(s) * (double)DAY_MS) / TICK_MS * TICK_MS;
    qsort(t, n, sizeof *t, cmp_i64);
    return t;
}

static void happenings(struct sim *s, struct plan_of_day *p)
{
    while (p->next_recalc < p->n_recalc && p->recalc[p->next_recalc] <= s->now) {
        recalculate(s, (size_t)(uniform(s) * (double)s->n));
        p->next_recalc++;
    }
    while (p->next_deletion < p->n_deletion && p->deletion[p->next_deletion] <= s->now) {
        struct group *g = &s->a[(size_t)(uniform(s) * (double)s->n)].g[(int)(uniform(s) * GROUPS)];
        if (!g->deleted) {
            g->deleted = true;
            g->deleted_at = s->now;
        }
        p->next_deletion++;
    }
    if (s->now == 9LL * 3600 * 1000) {                  /* a 50,000-member first sync */
        s->b[0].pending[BUDGET_FULL_SYNC] += 1 + 2 + 1; /* create, 2 imports, a check */
        s->b[0].pending[BUDGET_REFRESH] += 50000 / 500; /* read back */
        s->pending_total += 4 + 100;
    }
}

static int cmp_used(const void *a, const void *b, void *arg);

/* What a round of association i would cost now. */
static long round_cost(const struct association *as)
{
    long lists = 0, removes = 0;
    for (int gi = 0; gi < GROUPS; gi++) {
        lists += as->g[gi].joins > 0;
        removes += as->g[gi].leaves > 0;
    }
    return lists + (removes > 0) + 1;
}

/* Due associations start their rounds least-used first, while the budget allows. */
static void start_due_rounds(struct sim *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->a[i].next_due_ms && s->a[i].next_due_ms <= s->now && s->a[i].round_left == 0)
            s->due[n++] = i;
    qsort_r(s->due, n, sizeof *s->due, cmp_used, s);
    for (size_t k = 0; k < n; k++) {
        struct association *as = &s->a[s->due[k]];
        if (!s->first_come && !budget_round_allowed(&s->day, s->delay_ms, MAX_DELAY_MS,
                                                    s->pending_total, round_cost(as)))
            break;
        start_round(s, s->due[k]);
    }
}

static int cmp_used(const void *a, const void *b, void *arg)
{
    const struct sim *s = arg;
    int64_t x = s->a[*(const size_t *)a].next_due_ms, y = s->a[*(const size_t *)b].next_due_ms;
    return (x > y) - (x < y);
}

static void every_second(struct sim *s)
{
    s->day.recent_rate *= exp(-1.0 / RATE_TAU_S);
    s->day.one_off_rate *= exp(-1.0 / RATE_TAU_S);
    s->day.now_s = s->now / 1000;
    if (!s->first_come)
        s->delay_ms = budget_sync_delay_ms(&s->day, s->delay_ms, 1.0, BASE_DELAY_MS, MAX_DELAY_MS);
    schedule_reconciles(s);
    start_due_rounds(s);
}

static void run_day(struct sim *s)
{
    struct plan_of_day p = {0};
    p.n_recalc = (size_t)llround(0.05 * (double)s->n);
    p.recalc = random_times(s, p.n_recalc);
    p.n_deletion = s->n >= 100 ? s->n / 100 : 1;
    p.deletion = random_times(s, p.n_deletion);
    for (s->now = 0; s->now < DAY_MS; s->now += TICK_MS) {
        arrive(s);
        happenings(s, &p);
        if (s->now % 1000 == 0)
            every_second(s);
        if (s->pending_total > 0)
            grant(s);
    }
    free(p.recalc);
    free(p.deletion);
}

/* Changes still waiting at 24:00 count with the wait so far (a lower bound). */
static size_t censor(struct sim *s)
{
    size_t waiting = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct association *as = &s->a[i];
        for (int gi = 0; gi < GROUPS; gi++) {
            struct group *g = &as->g[gi];
            if (g->deleted && g->deleted_at >= 0) { /* not noticed yet: its wait so far */
                s->now = DAY_MS;
                found_deleted(s, g);
                s->n_unnoticed++;
            }
            if (g->deleted)
                continue; /* in error: waits for an admin, not for the budget */
            as->flight = grow(as->flight, &as->cap_flight, as->n_flight + g->n, sizeof *as->flight);
            memcpy(as->flight + as->n_flight, g->arrivals, g->n * sizeof *g->arrivals);
            as->n_flight += g->n;
        }
        waiting += as->n_flight;
        land_round(s, as);
    }
    return waiting;
}

/* ---- what the day cost, beside what it could have cost ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_sample(const void *a, const void *b)
{
    const struct sample *x = a, *y = b;
    if (x->assoc != y->assoc)
        return x->assoc - y->assoc;
    return (x->latency_s > y->latency_s) - (x->latency_s < y->latency_s);
}

static int cmp_change(const void *a, const void *b)
{
    const struct change *x = a, *y = b;
    if (x->assoc != y->assoc)
        return x->assoc - y->assoc;
    return (x->at > y->at) - (x->at < y->at);
}

static double quantile(const double *sorted, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)ceil(q * (double)n);
    return sorted[k ? k - 1 : 0];
}

/* Worst and median of the associations' own p99s. */
static void per_association_p99(struct sim *s, double *worst, double *median)
{
    qsort(s->lat, s->n_lat, sizeof *s->lat, cmp_sample);
    double *p99 = calloc(s->n, sizeof *p99), *v = calloc(s->n_lat + 1, sizeof *v);
    size_t n = 0;
    for (size_t k = 0; k < s->n_lat;) {
        size_t m = 0;
        int a = s->lat[k].assoc;
        while (k < s->n_lat && s->lat[k].assoc == a)
            v[m++] = s->lat[k++].latency_s;
        p99[n++] = quantile(v, m, 0.99); /* already sorted by latency */
    }
    qsort(p99, n, sizeof *p99, cmp_double);
    *worst = n ? p99[n - 1] : 0;
    *median = quantile(p99, n, 0.5);
    free(p99);
    free(v);
}

/*
 * A clairvoyant schedule that sends each change at most window_s after it
 * arrives, batching as much as that allows: per association, a window opens at
 * the first waiting change and everything that arrives within window_s goes in
 * one round at its end (one import per list with joins, one removal, one check).
 * Returns its request count; *p99 gets its p99 latency.
 */
static long batch_schedule(const struct change *log, size_t n, double window_s, double *p99)
{
    int64_t w = (int64_t)(window_s * 1000);
    double *lat = malloc((n + 1) * sizeof *lat);
    long cost = 0;
    for (size_t k = 0; k < n;) {
        int a = log[k].assoc;
        int64_t end = log[k].at + w;
        bool joins[GROUPS] = {false}, leaves = false;
        for (; k < n && log[k].assoc == a && log[k].at <= end; k++) {
            lat[k] = (double)(end - log[k].at) / 1000.0;
            if (log[k].join)
                joins[(int)log[k].group] = true;
            else
                leaves = true;
        }
        for (int g = 0; g < GROUPS; g++)
            cost += joins[g];
        cost += leaves + 1;
    }
    qsort(lat, n, sizeof *lat, cmp_double);
    *p99 = quantile(lat, n, 0.99);
    free(lat);
    return cost;
}

/* The shortest window whose schedule fits the requests left for syncing. */
static double best_window(const struct change *log, size_t n, long affordable, double *p99)
{
    double lo = 1, hi = 86400;
    if (batch_schedule(log, n, hi, p99) > affordable)
        return hi; /* not even once a day */
    for (int it = 0; it < 40 && hi - lo > 0.5; it++) {
        double mid = (lo + hi) / 2;
        if (batch_schedule(log, n, mid, p99) <= affordable)
            hi = mid;
        else
            lo = mid;
    }
    batch_schedule(log, n, hi, p99);
    return hi;
}

/* How soon a deleted list must show as an error, when nobody asks (#10). */
static double notice_target_h(size_t n)
{
    return n <= 100 ? 1 : 6;
}

/*
 * The arithmetic that bounds what the day can do: reconcile's share buys so many
 * reads of the lists a day, one per association per turn, so on equal turns each
 * association comes round every n / reads days; and the syncing the rest affords.
 */
static void print_bounds(size_t n, double p99, double best_p99)
{
    double reads = 0.2 * LIMIT, turn_h = (double)n * 24.0 / reads, target = notice_target_h(n);
    double need = (double)n * 24.0 / target;
    printf("- %zu associations: reconcile's share 0.2 x %d = %.0f list reads a day = %.1f per "
           "association, a turn every %.1f h on equal turns (a busy one may have an extra turn "
           "half-way, out of what they leave); noticing a deletion within %.0f h needs %.0f x 24 / "
           "%.0f = %.0f "
           "reads a day (%.0f%% of the day, %.1fx the share): %s. ",
           n, LIMIT, reads, reads / (double)n, turn_h, target, (double)n, target, need,
           100.0 * need / LIMIT, need / reads,
           need <= reads ? "within the share" : "not possible within the share");
    if (best_p99 > 60) /* the budget binds: the sync targets are relative to the bound */
        printf("p99 %.0f s beside the best any schedule reaches within the day, %.0f s: %.2fx.",
               p99, best_p99, p99 / best_p99);
    printf("\n");
}

static void report(struct sim *s, size_t waiting, double *p99_out, double *best_out)
{
    double *v = malloc((s->n_lat + 1) * sizeof *v);
    for (size_t k = 0; k < s->n_lat; k++)
        v[k] = s->lat[k].latency_s;
    qsort(v, s->n_lat, sizeof *v, cmp_double);
    double p50 = quantile(v, s->n_lat, 0.5), p99 = quantile(v, s->n_lat, 0.99);
    double max = s->n_lat ? v[s->n_lat - 1] : 0, worst, median;
    free(v);
    per_association_p99(s, &worst, &median);
    qsort(s->detect_s, s->n_detect, sizeof *s->detect_s, cmp_double);
    qsort(s->log, s->n_log, sizeof *s->log, cmp_change);
    double cheap_p99, best_p99;
    long cheapest = batch_schedule(s->log, s->n_log, p99 > 1 ? p99 : 1, &cheap_p99);
    /* Both policies are held to the same fixed costs: the first sync and reconcile
     * at its share (a schedule that polls more has less left, by its own choice). */
    long reconcile = s->day.used_by_class[BUDGET_RECONCILE];
    long share = (long)(0.2 * LIMIT);
    long fixed = s->day.used_by_class[BUDGET_FULL_SYNC] + (reconcile < share ? reconcile : share);
    long affordable = (long)(LIMIT * BUDGET_CEILING) - fixed;
    best_window(s->log, s->n_log, affordable, &best_p99);
    const long *c = s->day.used_by_class;
    printf("| %s | %zu | %ld (%ld/%ld/%ld/%ld) | %.0f%% | %ld | %.0f s | %.0f s | %.0f s | %.0f s "
           "/ %.0f s "
           "| %zu | %zu + %zu of %zu, %.0f s / %.0f s | %ld / %ld | %.0f s |\n",
           s->first_come ? "first-come (before)" : "planned", s->n, s->day.used, c[0], c[1], c[2],
           c[3], 100.0 * (double)s->day.used / LIMIT, s->quota_refusals / (60000 / TICK_MS), p50,
           p99, max, worst, median, waiting, s->n_detect - s->n_unnoticed, s->n_unnoticed,
           s->n >= 100 ? s->n / 100 : 1, quantile(s->detect_s, s->n_detect, 0.5),
           s->n_detect ? s->detect_s[s->n_detect - 1] : 0, c[0], cheapest, best_p99);
    *p99_out = p99;
    *best_out = best_p99;
}

static void sim_free(struct sim *s)
{
    for (size_t i = 0; i < s->n; i++) {
        for (int gi = 0; gi < GROUPS; gi++)
            free(s->a[i].g[gi].arrivals);
        free(s->a[i].flight);
    }
    free(s->a);
    free(s->b);
    free(s->due);
    free(s->lat);
    free(s->detect_s);
    free(s->log);
}

int main(int argc, char **argv)
{
    size_t sizes[16] = {10, 100, 500, 2000}, n_sizes = 4;
    double p99[16] = {0}, best[16] = {0};
    if (argc > 1) {
        n_sizes = 0;
        for (int k = 1; k < argc && n_sizes < 16; k++)
            sizes[n_sizes++] = (size_t)strtoul(argv[k], NULL, 10);
    }
    printf("Simulated day: %d groups x %d members an association, 1%% changing a day, "
           "limit %d a day at %.0f/s (budget planner: service/budget.c)\n\n",
           GROUPS, MEMBERS, LIMIT, RATE);
    printf("| policy | associations | requests (class 1/2/3/4) | of the day | minutes class 1 "
           "refused | "
           "p50 | p99 | max | p99 worst / median association | changes waiting at 24:00 | "
           "deleted lists noticed + not yet at 24:00 of made, median / max delay (the unnoticed "
           "with their wait so far) | class-1 requests / cheapest at that p99 | "
           "best p99 within the day |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t k = 0; k < 2 * n_sizes; k++) {
        struct sim s = {.n = sizes[k / 2],
                        .rng = 0x9e3779b97f4a7c15ULL,
                        .delay_ms = BASE_DELAY_MS,
                        .first_come = k % 2 == 0};
        s.a = calloc(s.n, sizeof *s.a);
        s.b = calloc(s.n, sizeof *s.b);
        s.due = calloc(s.n, sizeof *s.due);
        s.day = (struct budget_day){.limit = LIMIT, .reconcile_share = 0.2};
        if (!s.a || !s.b)
            return 1;
        run_day(&s);
        size_t waiting = censor(&s);
        report(&s, waiting, &p99[k / 2], &best[k / 2]);
        fflush(stdout);
        sim_free(&s);
    }
    printf("\nWhat bounds the planned day:\n");
    for (size_t k = 0; k < n_sizes; k++)
        print_bounds(sizes[k], p99[k], best[k]);
    return 0;
}
