"""Scenario schema, TOML loading and ``key=value`` overrides.

A scenario is one TOML file. Every key is validated by pydantic; unknown keys are
errors (a typo must never silently fall back to a default). Overrides given on the
command line as dotted ``section.key=value`` pairs are parsed as TOML values and
typed by the schema.
"""

from __future__ import annotations

import json
import os
import tomllib
import warnings
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedforget import registry


class ConfigError(ValueError):
    """A scenario file or override is invalid; the message names file and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _check_registered(reg: registry.Registry, name: str) -> str:
    """Names come from their registries (one source of truth); the registry's
    error lists the known names."""
    reg.get(name)
    return name


class SyntheticConfig(_Section):
    """``make_classification`` task: memorisation-prone stand-in for Purchase-100."""

    samples: int = Field(4000, ge=100, description="samples in the whole task (train, audit and test together)")
    features: int = Field(200, ge=2, description="input features")
    informative: int = Field(40, ge=1, description="informative features (the rest is noise)")
    classes: int = Field(20, ge=2, description="classes")

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        if self.informative > self.features:
            raise ValueError("informative must be <= features")
        if self.classes * 2 > 2**self.informative:
            raise ValueError("classes * 2 must be <= 2**informative (make_classification)")
        return self


class DataConfig(_Section):
    dataset: str = Field(
        "digits", description="an embedded dataset (digits, mnist5k, synthetic), file:PATH (local .npz, .parquet, "
                              ".csv or image folder) or hf:<hub id> (online)"
    )
    label: str = Field("label", min_length=1, description="the label column of a file:PATH table (.parquet, .csv)")
    partitioner: str = Field("iid", description="how clients get their data: iid, dirichlet, pathological, shard")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (dirichlet): smaller is more label skew")
    classes_per_client: int = Field(2, ge=1, description="labels per client (pathological)")
    shards_per_client: int = Field(2, ge=1, description="label-sorted shards per client (shard)")
    num_clients: int = Field(10, ge=1, le=10_000, description="clients (Flower virtual SuperNodes)")
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of each client's data it never trains on")
    audit_share: float = Field(
        0.5, ge=0.0, le=1.0, description="share of the held-out part the oracle audits with; the rest is the client's validation part"
    )
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of the dataset kept out of every client as the test split")
    server_validation_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of the test split held by the server for methods' accuracy guards"
    )
    seed: int | None = Field(
        None, ge=0, description="the seed the data derive from (dataset draw, test split, partition, role splits, "
                                "witnesses, deletion sets); unset: the scenario seed. Fix it and --seeds trains N "
                                "federations on the same data (fedforget epsilon needs that)"
    )
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("partitioner")
    @classmethod
    def _registered_partitioner(cls, name: str) -> str:
        return _check_registered(registry.partitioners, name)

    @field_validator("dataset")
    @classmethod
    def _registered_dataset(cls, name: str) -> str:
        # hf:<hub id> and file:PATH are prefixes, not registered names: any Hub
        # dataset or local file loads (fedforget.data checks it before a run).
        if name.startswith("hf:") and len(name) > 3:
            return name
        if name.startswith("file:"):
            if not name[5:].strip():
                raise ValueError("file: needs a path: file:PATH (.npz, .parquet, .csv or an image folder)")
            # Absolute from here on: every process (Ray actors, a resumed run)
            # reads the file the user meant, whatever its working directory.
            return "file:" + os.path.abspath(os.path.expanduser(name[5:]))
        try:
            return _check_registered(registry.datasets, name)
        except registry.UnknownNameError as err:
            raise ValueError(f"{err} or hf:<hub id>; for local data: file:PATH (.npz, .parquet, .csv "
                             "or an image folder)") from None


class ModelConfig(_Section):
    name: str = Field("mlp", description="a registered model (logreg, mlp, cnn, lenet, resnet18; `fedforget models`) or a module:attribute path")
    hidden: list[int] = Field(default_factory=lambda: [128], description="widths of the hidden fully connected layers (mlp; cnn: after its convs)")

    @field_validator("name")
    @classmethod
    def _registered_model(cls, name: str) -> str:
        return _check_registered(registry.models, name)

    @model_validator(mode="after")
    def _check_hidden(self) -> ModelConfig:
        if any(h < 1 for h in self.hidden):
            raise ValueError("hidden sizes must be >= 1")
        return self


class TrainConfig(_Section):
    rounds: int = Field(20, ge=1, le=100_000, description="federated rounds of every arm")
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of clients sampled per round (seeded, the same in every arm)")
    local_epochs: int = Field(1, ge=1, description="passes over its train part per round, per client")
    batch_size: int = Field(32, ge=1, description="local mini-batch size")
    lr: float = Field(0.05, gt=0, description="local learning rate")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="local optimiser")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay")


class RuntimeConfig(_Section):
    engine: str = Field(
        "ray", description="ray (Flower Simulation Runtime), actors (Ray actors, our Grid), inline (one process): "
                           "a registered engine (fedforget engines lists them)"
    )
    client_failure_rate: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="share of sampled clients whose train reply fails in a regular round, drawn from (seed, round, client): every arm sees the same failures",
    )
    min_replies: int = Field(1, ge=1, description="fewest train replies an arm's round aggregates; fewer stop the run")
    on_client_error: Literal["record", "abort"] = Field(
        "record", description="a ClientApp exception in training: 'record' it and aggregate the rest, or 'abort' the run"
    )
    client_retries: int = Field(2, ge=0, description="retries of a failed unlearning-step request before the run stops")
    on_divergence: Literal["stop", "mark"] = Field(
        "stop", description="a method arm whose weights or loss go non-finite: 'stop' the run, or 'mark' it diverged and freeze it (original and retrain always stop)"
    )
    checkpoints: bool = Field(True, description="write checkpoint.pt after every round (fedforget resume RUN_DIR)")
    keep_checkpoints: bool = Field(False, description="keep checkpoint.pt when the run succeeds")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per ClientApp actor (ray, actors)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per ClientApp actor (ray, actors)")
    address: str = Field("", description="an existing Ray cluster to join (actors); '' starts a local one")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where models train: auto picks CUDA when torch sees it")

    @field_validator("engine")
    @classmethod
    def _registered_engine(cls, name: str) -> str:
        # The runner starts engines by these names: a path cannot name one.
        if name not in registry.engines:
            raise ValueError(f"unknown engine {name!r}; expected one of {', '.join(registry.engines.names())}")
        return name


class TrackingConfig(_Section):
    """Live logging of every metric row to experiment trackers (off by default).

    ``tensorboard``: event files under ``<run dir>/tensorboard``, or under
    ``tensorboard_dir/<run>`` (``<run>``: the run directory's last two parts,
    ``cell-003/seed-1`` in a sweep), one TensorBoard run per arm. ``mlflow``: an
    MLflow run per fedforget run with one nested run per arm, in the store at
    ``mlflow_uri`` (default ``$MLFLOW_TRACKING_URI``, else the local file store
    ``./mlruns``). Each needs its optional extra: ``fedforget[tensorboard]``,
    ``fedforget[mlflow]``.
    """

    backends: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list, description="trackers that get every metric row live")
    tensorboard_dir: str = Field("", description="TensorBoard root: logs go to <it>/<run> ('' = <run dir>/tensorboard)")
    mlflow_uri: str = Field("", description="MLflow tracking URI ('' = $MLFLOW_TRACKING_URI, else file:./mlruns)")
    mlflow_experiment: str = Field("", description="MLflow experiment ('' = the scenario's name)")


class Event(_Section):
    """Something that happens to one or more clients at the start of a round.

    ``kind``:

    - ``withdraw``: the whole client leaves; it never trains again.
    - ``delete_fraction``: the client deletes a seeded ``fraction`` of its train
      samples and keeps training on the rest.
    - ``delete_class``: the client deletes all its train samples of ``label``.

    The data to forget ("forget set") is the whole train part for ``withdraw``
    and the deleted samples otherwise.
    """

    round: int = Field(ge=1, description="the round it happens before: its unlearning step runs between rounds round-1 and round")
    client: int | None = Field(None, ge=0, description="the client (or give clients)")
    clients: list[int] | None = Field(None, description="several clients leaving together")
    kind: Literal["withdraw", "delete_fraction", "delete_class"] = Field(
        "withdraw", description="withdraw (the client leaves), delete_fraction or delete_class (it deletes data)"
    )
    fraction: float | None = Field(None, gt=0.0, lt=1.0, description="share of its train part deleted (delete_fraction)")
    label: int | None = Field(None, ge=0, description="the class deleted (delete_class)")
    witness: Literal["backdoor", "canary"] | None = Field(None, description="plant witness samples in the client's data (withdraw)")
    witness_fraction: float = Field(0.1, gt=0.0, le=1.0, description="share of the client's train part that is witness")
    witness_label: int = Field(0, ge=0, description="the label witnesses are given (canary) or trigger to (backdoor)")

    @model_validator(mode="after")
    def _one_client_spec(self) -> Event:
        if (self.client is None) == (self.clients is None):
            raise ValueError("give exactly one of 'client' or 'clients'")
        if self.clients is not None:
            if not self.clients:
                raise ValueError("'clients' must not be empty")
            if len(set(self.clients)) != len(self.clients):
                raise ValueError("'clients' lists a client twice")
            if any(c < 0 for c in self.clients):
                raise ValueError("client ids must be >= 0")
        if (self.kind == "delete_fraction") != (self.fraction is not None):
            raise ValueError("'fraction' is required by, and only allowed with, kind = 'delete_fraction'")
        if (self.kind == "delete_class") != (self.label is not None):
            raise ValueError("'label' is required by, and only allowed with, kind = 'delete_class'")
        if self.witness is not None and self.kind != "withdraw":
            raise ValueError("'witness' is only supported with kind = 'withdraw'")
        return self

    @property
    def client_ids(self) -> list[int]:
        return [self.client] if self.client is not None else list(self.clients or [])

    @property
    def withdraws(self) -> bool:
        return self.kind == "withdraw"


class UnlearningConfig(_Section):
    """Which methods run as arms, and their parameters (``[unlearning.<method>]``)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)

    methods: list[str] = Field(default_factory=list, description="unlearning methods, one arm each (fedforget methods lists them)")
    recovery_rounds: int = Field(5, ge=0, description="rounds after the event run by each method's recovery protocol")

    def method_params(self, name: str) -> dict[str, Any]:
        """The ``[unlearning.<name>]`` table (defaults filled in by the method)."""
        return dict((self.model_extra or {}).get(name) or {})


class OracleConfig(_Section):
    """The membership oracle (``[oracle]``): calibrated once per withdrawal event
    on the global model just before it, then reused for every round and arm.

    Each attack's parameters live in its own table, ``[oracle.<attack>]``
    (``fedforget methods`` lists them); the attack registry validates them.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)

    attack: str = Field("loss", description="membership attack: loss, population, lira")
    n_boot: int = Field(200, ge=0, description="bootstrap replicates for the FR and AUC intervals")
    controls: int = Field(2, ge=0, description="non-withdrawn control clients audited beside each withdrawn one")
    scores: bool = Field(True, description="write per-sample scores for the event and last rounds")
    min_nonmembers: int = Field(
        1000, ge=1, description="non-members per audited client where the data allows (TPR at 1% FPR needs 1,000)"
    )

    @field_validator("attack")
    @classmethod
    def _registered_attack(cls, name: str) -> str:
        return _check_registered(registry.attacks, name)

    @model_validator(mode="after")
    def _check_attack_tables(self) -> OracleConfig:
        for key, table in (self.model_extra or {}).items():
            registry.attacks.validate_params(key, table)
        return self

    def attack_params(self) -> dict[str, Any]:
        """The chosen attack's parameter table (defaults filled in by the attack)."""
        return dict((self.model_extra or {}).get(self.attack) or {})


class Scenario(_Section):
    name: str = Field("scenario", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
                      description="a plain file name (letters, digits, '.', '_', '-'): it names the run directory")
    seed: int = Field(0, ge=0, description="every random draw derives from it and named parts (arm, round, client)")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    events: list[Event] = Field(default_factory=list, description="withdrawals and deletions ([[events]] tables)")
    unlearning: UnlearningConfig = UnlearningConfig()
    oracle: OracleConfig = OracleConfig()
    tracking: TrackingConfig = TrackingConfig()

    @property
    def data_seed(self) -> int:
        """The seed the federated data derive from: ``data.seed`` when set, else ``seed``."""
        return self.seed if self.data.seed is None else self.data.seed

    @model_validator(mode="after")
    def _check_events(self) -> Scenario:
        seen: set[int] = set()
        for i, ev in enumerate(self.events):
            if ev.round > self.train.rounds:
                raise ValueError(
                    f"events[{i}].round = {ev.round} is after the last round "
                    f"({self.train.rounds})"
                )
            for c in ev.client_ids:
                if c >= self.data.num_clients:
                    raise ValueError(
                        f"events[{i}]: client {c} does not exist "
                        f"(num_clients = {self.data.num_clients})"
                    )
                if c in seen:
                    what = "withdraws twice" if ev.withdraws else "appears in two events"
                    raise ValueError(f"events[{i}]: client {c} {what}")
                seen.add(c)
        if self.events and len(self.withdrawn_clients()) >= self.data.num_clients:
            raise ValueError("every client withdraws; at least one must remain")
        attack = registry.attacks.get(self.oracle.attack)
        if not attack.supports_deletions and any(not ev.withdraws for ev in self.events):
            raise ValueError(f"oracle.attack = {self.oracle.attack!r} supports withdraw events only")
        return self

    def to_toml_dict(self) -> dict[str, Any]:
        """Every value, defaults filled in, ready for ``tomli_w``."""
        return _drop_none(self.model_dump(mode="json"))

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_toml_dict())

    def withdrawn_clients(self) -> list[int]:
        """Clients that leave (``withdraw`` events)."""
        return [c for ev in self.events if ev.withdraws for c in ev.client_ids]

    def forgetting_clients(self) -> list[int]:
        """Clients with data to forget (any event)."""
        return [c for ev in self.events for c in ev.client_ids]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested scenario dict as dotted keys (``train.lr``); lists as JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, list) else v
    return out


def _drop_none(obj: Any) -> Any:
    # TOML has no null: an unset optional key is simply absent.
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def parse_value(raw: str) -> Any:
    """Parse an override value as a TOML value; bare words stay strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a raw scenario dictionary."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"{source}: override {item!r} has an empty key")
        node = data
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{source}: override key {key!r}: {p!r} is not a table")
            node = nxt
        node[parts[-1]] = parse_value(raw.strip())
    return data


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def scenario_from_dict(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a raw dictionary, raising :class:`ConfigError` naming source and key."""
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    try:
        check_unlearning(scenario)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    return scenario


def check_unlearning(scenario: Scenario) -> None:
    """Check method names, their parameter tables and what each method needs
    from the scenario (one-line ValueError). The method registry knows the
    methods; config never imports them."""
    un = scenario.unlearning
    for name in un.methods:
        try:
            registry.methods.get(name)
        except ValueError as err:
            raise ValueError(f"unlearning.methods: {err}") from None
    if len(set(un.methods)) != len(un.methods):
        raise ValueError("unlearning.methods lists a method twice")
    if un.methods and not scenario.events:
        raise ValueError("unlearning.methods is set but there are no [[events]]")
    for key, table in (un.model_extra or {}).items():
        try:
            registry.methods.validate_params(key, table)
        except ValueError as err:
            raise ValueError(f"unlearning.{err}") from None
    for name in un.methods:
        cls = registry.methods.get(name)
        cls.check_scenario(scenario, cls.Params(**un.method_params(name)))
    if scenario.events and not un.methods:
        warnings.warn(
            "the scenario has [[events]] but unlearning.methods is empty: only the original and retrain "
            "arms run (no unlearning method is compared)", UserWarning, stacklevel=2,
        )


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Load a scenario TOML file and apply overrides."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"{source}: file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: malformed TOML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a UTF-8 text file") from None
    apply_overrides(data, overrides or [], source)
    return scenario_from_dict(data, source)


def with_overrides(scenario: Scenario, overrides: list[str]) -> Scenario:
    """A new scenario with overrides applied to an existing one."""
    if not overrides:
        return scenario
    data = scenario.model_dump(mode="json")
    apply_overrides(data, overrides, f"<{scenario.name}>")
    return scenario_from_dict(_drop_none(data), f"<{scenario.name}>")
