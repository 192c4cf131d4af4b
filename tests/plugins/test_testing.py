"""mixer.testing: the contract suite catches what breaks the contract; the builders build what the
runtime would."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from adapters.jwt import REQUESTAUTH_TEMPLATE
from mixer import AdapterInfo, CheckHandler, CheckResult, Handler, HandlerEnv, ReportBatch, ReportHandler
from mixer.expr import EvaluationError
from mixer.templates import BUILTIN_TEMPLATES, Instance, MetricInstance
from mixer.testing import (
    AdapterContract,
    build_default_handler,
    check_adapter,
    check_config_model,
    check_descriptor,
    check_handler_classes,
    check_lifecycle,
    handler_env,
    instances,
    report_batch,
)
from tests.plugins._sample_plugin import SampleConfig, SampleHandler, adapter


class TestSampleContract(AdapterContract):
    """The suite as a plugin runs it, on a well-behaved adapter."""

    adapter = adapter("sample")


class _Loose(BaseModel):
    anything: int = 0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _info(factory: object, config_model: type[BaseModel] = _Strict, templates: str = "metric") -> AdapterInfo:
    return AdapterInfo("bad", "misbehaves", frozenset({templates}), config_model, factory)  # type: ignore[arg-type]


def test_a_descriptor_without_description_fails() -> None:
    with pytest.raises(AssertionError, match="no description"):
        check_descriptor(AdapterInfo("bad", "", frozenset({"metric"}), SampleConfig, adapter("x").factory))


def test_a_config_model_taking_unknown_keys_fails() -> None:
    with pytest.raises(AssertionError, match="extra keys must be forbidden"):
        check_config_model(_info(lambda config, env: SampleHandler(), _Loose))


def test_a_factory_writing_files_fails(tmp_path: Path) -> None:
    def factory(config: _Strict, env: HandlerEnv) -> Handler:
        assert env.data_dir is not None
        (env.data_dir / "spool").mkdir()
        return SampleHandler()

    with pytest.raises(AssertionError, match="touched the disk"):
        build_default_handler(_info(factory), tmp_path)


@pytest.fixture
def stop_threads() -> Iterator[threading.Event]:
    stop = threading.Event()
    yield stop
    stop.set()


def test_a_factory_starting_threads_fails(tmp_path: Path, stop_threads: threading.Event) -> None:
    def factory(config: _Strict, env: HandlerEnv) -> Handler:
        threading.Thread(target=stop_threads.wait, daemon=True).start()
        return SampleHandler()

    with pytest.raises(AssertionError, match="started threads"):
        build_default_handler(_info(factory), tmp_path)


def test_a_handler_missing_its_templates_class_fails(tmp_path: Path) -> None:
    info = _info(lambda config, env: SampleHandler(), templates="listentry")
    handler = build_default_handler(info, tmp_path)
    with pytest.raises(AssertionError, match="supports listentry but is no CheckHandler"):
        check_handler_classes(info, handler)


def test_a_template_the_plugin_registers_is_found_when_named(tmp_path: Path) -> None:
    class Checker(CheckHandler):
        async def handle_check(self, instance: Instance) -> CheckResult:
            return CheckResult()

    info = _info(lambda config, env: Checker(), templates="requestauth")
    with pytest.raises(AssertionError, match="unknown template requestauth"):
        check_handler_classes(info, Checker())
    check_handler_classes(info, Checker(), [REQUESTAUTH_TEMPLATE])


async def test_a_handler_leaving_a_task_behind_fails() -> None:
    class Leaky(ReportHandler):
        async def start(self) -> None:
            self.task = asyncio.get_running_loop().create_task(asyncio.sleep(60))

        def handle_report(self, batch: ReportBatch) -> None:
            return None

    leaky = Leaky()
    with pytest.raises(AssertionError, match="tasks left running after shutdown"):
        await check_lifecycle(leaky)
    leaky.task.cancel()


async def test_check_adapter_runs_every_check(tmp_path: Path) -> None:
    await check_adapter(adapter("sample"), tmp_path)
    with pytest.raises(AssertionError, match="extra keys"):
        await check_adapter(_info(lambda config, env: SampleHandler(), _Loose), tmp_path)


def test_handler_env_names_the_handler(tmp_path: Path) -> None:
    env = handler_env("counter.istio-system", data_dir=tmp_path, delivery_ack="spool")
    assert env.handler_name == "counter.istio-system"
    assert env.logger.name.endswith("counter.istio-system")
    assert env.data_dir == tmp_path
    assert env.delivery_ack == "spool"
    assert dict(env.plans) == {}
    assert env.previous is None


def test_instances_are_built_from_attributes_as_the_runtime_builds_them() -> None:
    params = {"value": "response.size | 0", "dimensions": {"path": "request.path", "code": "response.code"}}
    records: list[dict[str, object]] = [
        {"request.path": "/a", "response.code": 200, "response.size": 12},
        {"request.path": "/b", "response.code": 404},
    ]
    built = instances("metric", params, records, name="requestsize.istio-system")
    assert built == [
        MetricInstance("requestsize.istio-system", 12, {"path": "/a", "code": 200}),
        MetricInstance("requestsize.istio-system", 0, {"path": "/b", "code": 404}),
    ]
    # As in the runtime, an attribute an expression needs and no default covers fails the instance.
    with pytest.raises(EvaluationError, match=r"response\.code"):
        instances("metric", params, [{"request.path": "/c"}])


def test_a_template_spec_is_taken_as_is() -> None:
    metric = next(spec for spec in BUILTIN_TEMPLATES if spec.name == "metric")
    (built,) = instances(metric, {"value": "1"}, [{}])
    assert isinstance(built, MetricInstance)
    assert built.value == 1


def test_a_report_batch_is_for_one_handler() -> None:
    batch = report_batch("reportnothing", {}, [{}, {}], handler="h.ns", name="nothing.ns")
    assert batch.handler == "h.ns"
    assert [instance.name for instance in batch.instances] == ["nothing.ns", "nothing.ns"]


def test_params_that_do_not_compile_are_named() -> None:
    with pytest.raises(ValueError, match=r"instance i\.ns of template metric: .*no\.such\.attribute"):
        instances("metric", {"value": "no.such.attribute"}, [{}], name="i.ns")


def test_an_unknown_template_is_named() -> None:
    with pytest.raises(ValueError, match=r"no built-in template 'nosuch' \(built-in: .*metric"):
        instances("nosuch", {}, [{}])
