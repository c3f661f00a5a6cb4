"""Deployment health: one minimal call per deployment, all at once; optional background checks."""

import logging
import random
import time

import gevent
from gevent.pool import Pool

from gateway import errors

log = logging.getLogger("gateway.health")

PING = "ping"


LAST_CHECK = "lastcheck:"  # shared state key of a deployment's last health check
LAST_CHECK_TTL = 7 * 24 * 3600


def _probe_body(deployment):
    """The smallest request the deployment's mode accepts."""
    mode = (deployment.provider.config.model_info or {}).get("mode") or "chat"
    if mode == "embedding":
        return "embeddings", {"input": PING}
    if mode == "completion":
        return "completions", {"prompt": PING, "max_tokens": 1}
    return "chat", {"messages": [{"role": "user", "content": PING}], "max_tokens": 1}


def check_one(router, deployment):
    """(healthy, entry) for one deployment; the entry names model and api_base, never a key."""
    healthy, entry, _value = _check(router, deployment)
    return healthy, entry


def _check(router, deployment):
    provider = deployment.provider
    entry = {"model_name": provider.config.model_name, "model": provider.config.model,
             "api_base": provider.api_base, "model_id": deployment.id}
    endpoint, body = _probe_body(deployment)
    started = time.monotonic()
    try:
        with gevent.Timeout(deployment.health_check_timeout + 1,
                            errors.UpstreamTimeoutError("health check timed out")):
            router.run(provider, provider.config.model_name, endpoint, body, False,
                       timeout=deployment.health_check_timeout)
    except errors.GatewayError as exc:
        return _remember(router, deployment, False, {**entry, "error": exc.message})
    except Exception as exc:  # a provider bug must not take /health down with it
        log.exception("health check of %s crashed", deployment.id)
        return _remember(router, deployment, False, {**entry, "error": f"health check failed: {type(exc).__name__}"})
    return _remember(router, deployment, True, {**entry, "latency_ms": round((time.monotonic() - started) * 1000, 1)})


def _remember(router, deployment, healthy, entry):
    """Keep the check's outcome in the shared state, for every worker and instance to show
    (last_check: the time it ran, negative when it failed): (healthy, entry, that value)."""
    value = time.time() if healthy else -time.time()
    try:
        router.state.set(LAST_CHECK + deployment.id, value, LAST_CHECK_TTL)
    except Exception:  # noqa: BLE001  (the state being down must not fail the check)
        log.debug("could not keep the health check of %s", deployment.id, exc_info=True)
    return healthy, entry, value


def last_checks(router, deployments):
    """{deployment id: {"healthy", "at" (epoch seconds)}} of the deployments checked lately."""
    values = router.state.get_many([LAST_CHECK + d.id for d in deployments])
    return {d.id: {"healthy": value > 0, "at": abs(value)} for d, value in zip(deployments, values) if value}


def check_all(router):
    """LiteLLM's /health answer: every deployment checked concurrently."""
    deployments = router.deployments()
    pool = Pool(min(32, max(1, len(deployments))))
    results = pool.map(lambda d: check_one(router, d), deployments)
    healthy = [entry for ok, entry in results if ok]
    unhealthy = [entry for ok, entry in results if not ok]
    return {"healthy_endpoints": healthy, "unhealthy_endpoints": unhealthy,
            "healthy_count": len(healthy), "unhealthy_count": len(unhealthy)}


def check_and_cool(router):
    """One background pass: check every deployment, cool the failing ones down (in the router's
    shared state: every worker of this instance, every instance with Redis). The outcomes, for the
    other instances: {deployment id: [last_check value, error or None]}."""
    results = {}
    for deployment in router.deployments():
        ok, entry, value = _check(router, deployment)
        results[deployment.id] = [value, entry.get("error")]
        if not ok:
            group = router.groups[deployment.provider.config.model_name]
            group.cool_down(deployment, f"background health check failed: {entry['error']}")
    return results


def follow(router, results):
    """Another instance's background check, seen in the database (without Redis each instance has
    its own router state): keep its outcome here too and cool down what failed lately, unless this
    instance knows it already (its own check, or another worker of it got there first)."""
    deployments = {d.id: d for d in router.deployments()}
    ids = [i for i in results if i in deployments]
    for deployment_id, known in zip(ids, router.state.get_many([LAST_CHECK + i for i in ids])):
        value, error = results[deployment_id]
        if known is not None and abs(known) >= abs(value):
            continue
        router.state.set(LAST_CHECK + deployment_id, value, LAST_CHECK_TTL)
        deployment = deployments[deployment_id]
        group = router.groups[deployment.provider.config.model_name]
        if value < 0 and -value + group.cooldown_time > time.time():
            group.cool_down(deployment, f"background health check (by another instance) failed: {error}")


def job(router, interval):
    """The background checks as a cluster-wide job (gateway/storage/jobs.py): only the worker that
    holds the lease calls the upstreams, once per `interval`; every other worker takes its outcome
    from the database (needed without Redis, or while Redis is down: each instance's router state is
    then its own; with Redis the outcome is there already and following it changes nothing)."""
    from gateway.storage.jobs import Job

    def run(_fenced):
        results = check_and_cool(router)
        return len(results), results
    return Job("health_check", interval, run, lambda results: follow(router, results))


def start_background(router, interval):
    """Without a database to hold a lease in: every `interval` seconds one worker per interval does
    it, of this instance (of the cluster with Redis); failures cool deployments down."""
    def loop():
        while True:
            gevent.sleep(interval * random.uniform(0.9, 1.1))
            try:
                won, _ = router.state.admit(f"healthcheck:{int(time.time() // interval)}", 1, is_limit=False)
                if won:
                    check_and_cool(router)
            except Exception:
                log.exception("background health check failed")
    return gevent.spawn(loop)
