"""The hypothesis settings the model-file fuzzers share: fixed examples (derandomized, no
example database), no deadline on a shared machine, fixtures allowed."""

from hypothesis import HealthCheck, settings

MODEL_FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
