"""Choosing a deployment in a group: strategies, order priorities, rpm/tpm limits and cooldowns.

Shared state (gateway/state.py) is touched only for what a group's configuration uses: a group with
one deployment, no limits and simple-shuffle never reads or writes it.
"""

import logging
import random
import time

from gateway import errors
from gateway import data as modeldata

log = logging.getLogger("gateway.routing.balancer")

# The strategy names (router_settings.routing_strategy) are checked at load against
# gateway/config/sections.py ROUTING_STRATEGIES; Group below implements each.
# Upstream statuses that cool a deployment down at once (LiteLLM's rules): rate limited, bad key,
# no such model/deployment, request timeout.
COOLDOWN_NOW = frozenset({401, 404, 408, 429})
COOLDOWN_CACHE_SECONDS = 1.0
LATENCY_EXPLORE = 0.1  # share of calls sent to a random deployment to keep latencies fresh


class Deployment:
    """A provider object plus the routing facts of its `litellm_params` / `model_info`.

    `ident`: the id of the wildcard deployment a concrete one is made from (gateway/routing/router.py),
    so its rpm/tpm windows, cooldowns and latency are the wildcard deployment's, whatever the name."""

    def __init__(self, provider, ident=None):
        self.provider = provider
        config = provider.config
        params = config.params
        info = config.model_info or {}
        self.id = ident or config.id  # model_info.id, else a hash without secrets: what /model/info shows
        self.rpm = params.get("rpm")
        self.tpm = params.get("tpm")
        self.weight = params.get("weight")
        self.order = params.get("order")
        self.facts = modeldata.lookup(provider.model, info)
        self.max_input_tokens = self.facts.get("max_input_tokens")
        self.max_output_tokens = self.facts.get("max_output_tokens")
        try:
            self.input_price, self.output_price = modeldata.prices(params, self.facts)
            self.cache_read_price, self.cache_creation_price = modeldata.cache_prices(params, self.facts,
                                                                                      self.input_price)
            self.unit_prices = modeldata.unit_prices(params, self.facts)  # images, rerank queries
        except ValueError as exc:  # the file's prices are checked at load; this guards the table's
            raise errors.ConfigError(f"model_list[{config.index}].litellm_params.{exc}") from None
        self.health_check_timeout = float(params.get("health_check_timeout") or info.get("health_check_timeout") or 10)

    @property
    def priced(self):
        """Whether any price is known for the deployment's calls (per token, or per image or query)."""
        return self.input_price is not None or bool(self.unit_prices)

    @property
    def limited(self):
        """Whether calls must be counted against rpm/tpm (a limit of 0 takes no call; None: no limit)."""
        return self.rpm is not None or self.tpm is not None


class Group:
    """The deployments behind one model name and how to choose among them."""

    def __init__(self, name, deployments, strategy, state, cooldown_time, allowed_fails):
        self.name = name
        self.deployments = deployments
        self.strategy = strategy
        self.state = state
        self.cooldown_time = cooldown_time
        self.allowed_fails = allowed_fails
        self.weights = self._weights()
        self.uses_limits = any(d.limited for d in deployments)
        self.windows_known = any(d.max_input_tokens for d in deployments)
        # Cooldowns only make sense with somewhere else to go (LiteLLM never cools a lone deployment).
        self.uses_cooldowns = len(deployments) > 1
        self.tracks_inflight = strategy == "least-busy"
        self.tracks_latency = strategy == "latency-based-routing"
        self.tracks_usage = strategy.startswith("usage-based") or any(d.tpm is not None for d in deployments)
        self.pattern = None  # the wildcard model_name a concrete group was made from (Router)
        self._cool_cache = (0.0, {})

    def _weights(self):
        for key in ("weight", "rpm", "tpm"):
            values = [getattr(d, key) for d in self.deployments]
            if all(isinstance(v, (int, float)) for v in values) and sum(values) > 0:
                return values
        return None

    def cooling(self):
        """{deployment id: cooldown end} for deployments cooling now (refreshed once a second)."""
        if not self.uses_cooldowns:
            return {}
        fetched, cached = self._cool_cache
        now = time.time()
        if now - fetched < COOLDOWN_CACHE_SECONDS:
            return {k: v for k, v in cached.items() if v > now}
        values = self.state.get_many([f"cool:{d.id}" for d in self.deployments])
        cooling = {d.id: v for d, v in zip(self.deployments, values) if v and v > now}
        self._cool_cache = (now, cooling)
        return cooling

    def choose(self, exclude=(), fits=None):
        """A deployment to call, admitted against its limits; raises 429/503 when none can take it.

        `fits` (optional) keeps only the deployments that can take this request at all."""
        pool = [d for d in self.deployments if fits(d)] if fits is not None else list(self.deployments)
        candidates = [d for d in pool if d.id not in exclude] or pool
        cooling = self.cooling()
        if cooling:
            warm = [d for d in candidates if d.id not in cooling]
            if not warm:
                wait = max(0.0, min(cooling.values()) - time.time())
                raise errors.ServiceUnavailableError(
                    f"Every deployment of `{self.name}` is cooling down after failures; retry in {wait:.0f}s.",
                    code="deployments_cooling_down", headers={"Retry-After": str(max(1, round(wait)))})
            candidates = warm
        orders = sorted({d.order for d in candidates if d.order is not None})
        tiers = [[d for d in candidates if d.order == o] for o in orders] or [candidates]
        if orders:
            tiers[-1] += [d for d in candidates if d.order is None]
        soonest, unchecked = None, None
        for tier in tiers:
            for deployment in self._ranked(tier):
                try:
                    wait = self._admit(deployment)
                except errors.LimitStateUnavailableError as exc:
                    unchecked = exc  # its limits cannot be checked now (Redis down, `refuse`): try another
                    continue
                if wait is None:
                    return deployment
                soonest = wait if soonest is None else min(soonest, wait)
        if soonest is None and unchecked is not None:
            raise unchecked
        raise errors.RateLimitError(
            f"Every deployment of `{self.name}` is at its rpm/tpm limit; retry in {soonest:.0f}s.",
            headers={"Retry-After": str(max(1, round(soonest or 1)))})

    def _ranked(self, tier):
        """The tier in the order the strategy prefers."""
        if len(tier) == 1:
            return tier
        if self.strategy == "least-busy":
            loads = self.state.get_many([f"inflight:{d.id}" for d in tier])
            return [d for _, _, d in sorted((v or 0.0, random.random(), d) for v, d in zip(loads, tier))]
        if self.strategy.startswith("usage-based"):
            used = self.state.windows([f"tpm:{d.id}" for d in tier])
            return [d for _, _, d in sorted((u, random.random(), d) for u, d in zip(used, tier))]
        if self.strategy == "latency-based-routing":
            if random.random() < LATENCY_EXPLORE:
                return random.sample(tier, len(tier))
            latencies = self.state.get_many([f"latency:{d.id}" for d in tier])
            # Unmeasured deployments first: they need one call to be compared at all.
            return [d for _, _, d in sorted(((v if v is not None else -1.0), random.random(), d)
                                            for v, d in zip(latencies, tier))]
        weights = [self.weights[self.deployments.index(d)] for d in tier] if self.weights else None
        first = random.choices(tier, weights=weights)[0] if weights else random.choice(tier)
        return [first] + [d for d in tier if d is not first]

    def _admit(self, deployment):
        """None when the deployment may take one more call now, else seconds until it may."""
        if deployment.tpm is not None:
            used = self.state.window(f"tpm:{deployment.id}", is_limit=True)
            if used >= deployment.tpm:
                return 60.0
        if deployment.rpm is not None:
            allowed, wait = self.state.admit(f"rpm:{deployment.id}", deployment.rpm)
            if not allowed:
                return wait
        return None

    def started(self, deployment):
        """Bookkeeping before the call."""
        if self.tracks_inflight:
            self.state.add(f"inflight:{deployment.id}", 1)

    def finished(self, deployment, seconds=None, tokens=None, error=None):
        """Bookkeeping after the call (stream: after it ended): in-flight, latency, usage, cooldowns."""
        if self.tracks_inflight:
            self.state.add(f"inflight:{deployment.id}", -1)
        if error is None:
            if self.tracks_latency and seconds is not None:
                previous = self.state.get_many([f"latency:{deployment.id}"])[0]
                value = seconds if previous is None else 0.7 * previous + 0.3 * seconds
                self.state.set(f"latency:{deployment.id}", value, 3600)
            if self.tracks_usage and tokens:
                self.state.record(f"tpm:{deployment.id}", tokens)
            return
        if not self.uses_cooldowns or not _counts_as_failure(error):
            return
        status = error.upstream_status or error.status
        if status in COOLDOWN_NOW:
            self.cool_down(deployment, f"upstream answered {status}")
            return
        self.state.record(f"fails:{deployment.id}", 1)
        if self.state.window(f"fails:{deployment.id}") > self.allowed_fails:
            self.cool_down(deployment, f"more than {self.allowed_fails} failures in a minute")

    def cool_down(self, deployment, why):
        """Skip the deployment for cooldown_time seconds, in every worker."""
        until = time.time() + self.cooldown_time
        self.state.set(f"cool:{deployment.id}", until, self.cooldown_time)
        fetched, cached = self._cool_cache
        self._cool_cache = (fetched, {**cached, deployment.id: until})
        log.warning("deployment %s of %s cooling down for %gs: %s", deployment.id, self.name,
                    self.cooldown_time, why)


def _counts_as_failure(error):
    """Failures of the deployment, not of the request: 429, 5xx, timeouts, auth and not-found."""
    if isinstance(error, (errors.UpstreamError, errors.RateLimitError)):
        return True
    return error.upstream_status in COOLDOWN_NOW
