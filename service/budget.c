/*
 * budget.c - planning the shared Constant Contact day (see budget.h).
 *
 * The decisions, and why:
 * - Classes first. A member who joined a synced group (class 1) matters more
 *   than a first sync of a new group (2), which matters more than looking for
 *   lists an admin deleted (3), which matters more than refreshing counts (4).
 *   A lower class never takes a request while a higher one waits.
 * - Fair within a class. The association that has used least today (for its
 *   weight) goes first, so a 50,000-member first sync of one association
 *   interleaves with everyone else's work instead of going before it.
 * - Shares bind only when the day is short. Each association is entitled to an
 *   equal part of the day; what one does not need is shared out among the others
 *   (max-min fairness, computed by water-filling: budget_fair_share, shown in
 *   status). No separate cap is needed to hold an association at its share:
 *   class 1 always goes before the rest, and within it the association that used
 *   least goes first, so one past its share (used/weight above the water level)
 *   never goes before one under it that has class-1 work. While nobody else has
 *   work, an association may use what the others leave.
 * - A ceiling and a reserve. Nothing is planned past BUDGET_CEILING of the limit:
 *   the rest stays for class 1, so a quota_exceeded from CC is a bug, not a plan.
 *   Class 4 only runs while the day is calm (projected under BUDGET_CALM).
 * - Rounds are paced when the wait alone cannot keep the day. The coalescing
 *   wait stops at its maximum; past it, a round of class-1 or class-2 work
 *   starts only while what is committed (used, requests already queued, the
 *   round's own cost) plus the recent rate over the rest of the day stays under
 *   the ceiling. A round that waits keeps gathering its groups' changes, so the
 *   wait widens further exactly when the budget binds.
 * - Reconcile spread over the day. It may use reconcile_share of the limit, and
 *   by any hour no more than its part of the day so far (plus an hour), so a
 *   morning of polling cannot eat the evening's checks. Equal turns first: the
 *   share bought one read per association per interval; a busy association's
 *   extra turn (twice as often) only uses what is left, and within reconcile the
 *   least recently reconciled goes first.
 * - Coalescing widens with demand. A group's changes wait the base delay while
 *   the projection is calm; above it the wait is multiplied by the pressure (how
 *   many times over what is left the recent rate runs, aiming under BUDGET_CALM
 *   while that is possible, then under BUDGET_CEILING), a full step per
 *   BUDGET_RATE_WINDOW_S since the rate answers a new wait only that slowly. One
 *   sync window costs about the same whatever it carries, so the wait keeps
 *   growing until windows are rare enough; a proportional rule on the base delay
 *   alone would stall where waits of seconds coalesce nothing.
 */
#include "ccsync/budget.h"

#include <limits.h>
#include <math.h>

static double seconds_left(const struct budget_day *d)
{
    int64_t left = BUDGET_DAY_SECONDS - d->now_s;
    return left > 0 ? (double)left : 0.0;
}

/* What the recent rate will spend over the rest of the day: the steady part
 * for every second left, the one-off part (first syncs, read-backs) only over
 * the window its average takes to forget a job that ended. */
static double rate_over_rest(const struct budget_day *d)
{
    double rate = d->recent_rate > 0 ? d->recent_rate : 0;
    double one_off = d->one_off_rate > 0 ? (d->one_off_rate < rate ? d->one_off_rate : rate) : 0;
    double left = seconds_left(d);
    return (rate - one_off) * left +
           one_off * (left < BUDGET_RATE_WINDOW_S ? left : BUDGET_RATE_WINDOW_S);
}

double budget_projected(const struct budget_day *d)
{
    return (double)d->used + rate_over_rest(d);
}

static double weight_of(const struct budget_assoc *a)
{
    return a->weight > 0 ? a->weight : 1.0;
}

static double need_of(const struct budget_assoc *a)
{
    double need = (double)a->used_today;
    for (int c = 0; c < BUDGET_CLASSES; c++)
        need += a->pending[c] > 0 ? (double)a->pending[c] : 0;
    return need;
}

/* Water level L such that sum(min(need_i, L * w_i)) == capacity. The level only
 * rises from pass to pass and each pass fixes at least one more association or
 * stops, so at most n + 1 passes. */
static double water_level(const struct budget_assoc *a, size_t n, double capacity)
{
    double total_need = 0, weights = 0;
    for (size_t i = 0; i < n; i++) {
        total_need += need_of(&a[i]);
        weights += weight_of(&a[i]);
    }
    if (total_need <= capacity || weights <= 0)
        return INFINITY;
    double level = capacity / weights;
    size_t fixed = 0;
    for (size_t pass = 0; pass <= n; pass++) {
        double w_open = 0, need_fixed = 0;
        size_t fixed_now = 0;
        for (size_t i = 0; i < n; i++) {
            double need = need_of(&a[i]);
            if (need <= level * weight_of(&a[i])) {
                need_fixed += need;
                fixed_now++;
            } else {
                w_open += weight_of(&a[i]);
            }
        }
        if (w_open <= 0 || (pass > 0 && fixed_now == fixed))
            return level;
        fixed = fixed_now;
        level = (capacity - need_fixed) / w_open;
    }
    return level;
}

long budget_fair_share(const struct budget_day *d, const struct budget_assoc *a, size_t n, size_t i)
{
    double level = water_level(a, n, (double)d->limit * BUDGET_CEILING);
    if (isinf(level))
        return LONG_MAX;
    double share = floor(level * weight_of(&a[i]));
    return share > (double)LONG_MAX ? LONG_MAX : (long)share;
}

bool budget_is_short(const struct budget_day *d, const struct budget_assoc *a, size_t n)
{
    double ceiling = (double)d->limit * BUDGET_CEILING;
    double waiting = 0;
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < BUDGET_CLASSES; c++)
            waiting += a[i].pending[c] > 0 ? (double)a[i].pending[c] : 0;
    return (double)d->used + waiting > ceiling || budget_projected(d) > ceiling;
}

bool budget_reconcile_allowed(const struct budget_day *d)
{
    double elapsed = (double)(d->now_s + 3600) / BUDGET_DAY_SECONDS;
    if (elapsed > 1)
        elapsed = 1;
    double allowance = d->reconcile_share * (double)d->limit * elapsed;
    return (double)d->used_by_class[BUDGET_RECONCILE] < allowance;
}

/* May class cls spend at all now, whoever asks? */
static bool class_open(const struct budget_day *d, enum budget_class cls)
{
    if (d->used >= d->limit)
        return false;
    if (cls != BUDGET_CHANGES && (double)d->used >= (double)d->limit * BUDGET_CEILING)
        return false; /* the reserve is class 1's */
    if (cls == BUDGET_RECONCILE)
        return budget_reconcile_allowed(d);
    if (cls == BUDGET_REFRESH)
        return budget_projected(d) <= (double)d->limit * BUDGET_CALM;
    return true;
}

/* a goes before b within one class. */
static bool before(const struct budget_assoc *a, const struct budget_assoc *b,
                   enum budget_class cls)
{
    if (cls == BUDGET_RECONCILE && a->last_reconcile_ms != b->last_reconcile_ms)
        return a->last_reconcile_ms < b->last_reconcile_ms;
    double ua = (double)a->used_today / weight_of(a), ub = (double)b->used_today / weight_of(b);
    if (ua != ub)
        return ua < ub;
    return a->last_served_ms < b->last_served_ms;
}

static int pick_in_class(const struct budget_assoc *a, size_t n, enum budget_class cls)
{
    int best = -1;
    for (size_t i = 0; i < n; i++)
        if (a[i].pending[cls] > 0 && (best < 0 || before(&a[i], &a[best], cls)))
            best = (int)i;
    return best;
}

int budget_pick(const struct budget_day *d, const struct budget_assoc *a, size_t n,
                enum budget_class *cls)
{
    for (int c = 0; c < BUDGET_CLASSES; c++) {
        if (!class_open(d, (enum budget_class)c))
            continue;
        int i = pick_in_class(a, n, (enum budget_class)c);
        if (i >= 0) {
            *cls = (enum budget_class)c;
            return i;
        }
    }
    return -1;
}

/* How many times over what the rest of the day affords the recent rate runs:
 * above 1 the wait must grow, below 1 it may shrink. Aims under BUDGET_CALM while
 * that is still possible, then under BUDGET_CEILING. */
double budget_pressure(const struct budget_day *d)
{
    double limit = (double)d->limit;
    double target =
        (double)d->used < limit * BUDGET_CALM ? limit * BUDGET_CALM : limit * BUDGET_CEILING;
    double room = target - (double)d->used;
    double wanted = rate_over_rest(d);
    if (room <= 0)
        return wanted > 0 ? INFINITY : 1.0;
    return wanted / room;
}

int64_t budget_sync_delay_ms(const struct budget_day *d, int64_t current_ms, double elapsed_s,
                             int64_t base_ms, int64_t max_ms)
{
    if (base_ms < 1)
        base_ms = 1;
    if (current_ms < base_ms)
        current_ms = base_ms;
    if (budget_projected(d) <= (double)d->limit * BUDGET_CALM)
        return base_ms;
    double pressure = budget_pressure(d);
    if (isinf(pressure))
        return max_ms;
    /* The rate answers a change of the wait only over BUDGET_RATE_WINDOW_S, so the
     * wait moves by pressure^(elapsed / window): a full step per window. */
    double step = elapsed_s >= BUDGET_RATE_WINDOW_S ? 1.0 : elapsed_s / BUDGET_RATE_WINDOW_S;
    double delay = (double)current_ms * pow(pressure, step);
    if (delay <= (double)base_ms)
        return base_ms;
    return delay >= (double)max_ms ? max_ms : (int64_t)ceil(delay - 1e-6);
}

bool budget_may_start_round(const struct budget_day *d, long pending, long cost)
{
    double limit = (double)d->limit;
    double committed =
        (double)d->used + (double)(pending > 0 ? pending : 0) + (double)(cost > 0 ? cost : 0);
    /* Not past the ceiling either: the reserve above it is for the requests
     * of rounds already under way (and an admin's ask), not for new rounds. */
    return committed + rate_over_rest(d) <= limit * BUDGET_CEILING;
}

bool budget_round_allowed(const struct budget_day *d, int64_t delay_ms, int64_t max_ms,
                          long pending, long cost)
{
    if (delay_ms < max_ms && (double)d->used < (double)d->limit * BUDGET_CALM)
        return true;
    return budget_may_start_round(d, pending, cost);
}

int64_t budget_reconcile_interval_s(const struct budget_day *d, long cost_idle, long cost_busy,
                                    int64_t floor_s, int64_t *busy_s)
{
    double per_day = d->reconcile_share * (double)d->limit;
    /* Equal turns take the whole share: every association is checked once an
     * interval. A busy one may be checked twice as often, but only with what
     * the equal turns leave (budget_reconcile_allowed, and the least recently
     * reconciled first): weighing busy ones double instead stretched every idle
     * one's turn past what the share affords (the simulated day's 500
     * associations noticed a deleted list after 6.5 h where equal turns take 6). */
    double cost = (double)cost_idle + (double)cost_busy;
    int64_t idle = floor_s;
    if (per_day > 0 && cost > 0) {
        double s = ceil(cost * BUDGET_DAY_SECONDS / per_day - 1e-9);
        if (s > (double)idle)
            idle = (int64_t)s;
    } else if (per_day <= 0) {
        idle = BUDGET_DAY_SECONDS; /* no share at all: once a day, the bare minimum */
    }
    if (busy_s)
        *busy_s = (idle + 1) / 2 > floor_s ? (idle + 1) / 2 : floor_s;
    return idle;
}

long budget_needed_daily_limit(double sync_rate, double other_rate, int64_t delay_ms,
                               int64_t latency_s)
{
    double factor = 1.0;
    if (latency_s > 0 && (double)delay_ms > (double)latency_s * 1000.0)
        factor = (double)delay_ms / ((double)latency_s * 1000.0);
    double per_day =
        ((sync_rate > 0 ? sync_rate : 0) * factor + (other_rate > 0 ? other_rate : 0)) *
        BUDGET_DAY_SECONDS;
    return (long)ceil(per_day - 1e-6); /* 0.32 x 86,400 is 27,648, not 27,649 */
}

const char *budget_class_name(enum budget_class cls)
{
    static const char *const names[BUDGET_CLASSES] = {"changes", "full_sync", "reconcile",
                                                      "refresh"};
    return (int)cls >= 0 && cls < BUDGET_CLASSES ? names[cls] : "changes";
}
