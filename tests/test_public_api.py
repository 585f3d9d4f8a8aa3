"""The public fronts of ``ionflux`` and ``ionwall`` are curated: these lists change
on purpose only (add the name here in the same change)."""

import ionflux
import pytest

import ionwall

IONFLUX = [
    "AddressRefused",
    "AgentDefinitionError",
    "AgentNotFound",
    "AlertRuleError",
    "InvalidAgentTransition",
    "PlanNotFound",
    "PlanValidationError",
    "ReactorError",
    "ReactorLimitExceeded",
    "AuditNotWritten",
    "BackendUnavailable",
    "BodyTooLarge",
    "BusUnavailable",
    "CallCancelled",
    "ChildRunFailed",
    "CidMismatch",
    "Config",
    "ConfigError",
    "ConsentRequired",
    "ConsoleError",
    "CrossSiteRequest",
    "DataDirError",
    "StateConflict",
    "StateError",
    "StateSchemaError",
    "StateUnavailable",
    "DeadlineExceeded",
    "FuelExhausted",
    "GraphError",
    "GraphNotFound",
    "GraphProblem",
    "GraphValidationError",
    "GraphVersionExists",
    "GuestBuildError",
    "GuestError",
    "GuestTrap",
    "Host",
    "ImportBudgetExceeded",
    "ImportMismatch",
    "ImportOutsideWorld",
    "InvalidCid",
    "InvalidInput",
    "InvalidOutput",
    "InvalidPublisherSignature",
    "InvalidRunTransition",
    "Invocation",
    "IonfluxError",
    "JsonTooDeep",
    "Manifest",
    "ManifestError",
    "MemoryLimitExceeded",
    "ModuleError",
    "NotFound",
    "NotJson",
    "NotWasm",
    "OutputTooLarge",
    "Overloaded",
    "PermissionDenied",
    "PublishedTransform",
    "RunBudgetExceeded",
    "RunLogNotStored",
    "RunNotRecorded",
    "RunRefused",
    "SchemaViolation",
    "SessionLimitReached",
    "ShuttingDown",
    "StackOverflow",
    "StoreError",
    "SubjectReserved",
    "TableTooLarge",
    "TemplateBudgetExceeded",
    "TemplateError",
    "TooLarge",
    "TransformFailed",
    "TriggerConfigError",
    "TriggerError",
    "Unauthorized",
    "UnknownTransform",
    "WasiRefused",
    "load_config",
    "load_manifest",
]

IONWALL = [
    "ACTIONS",
    "KIND_TITLES",
    "MASK",
    "AllowAllGate",
    "AllowListGate",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditReport",
    "CallContext",
    "Claims",
    "ConsentAlreadyAnswered",
    "ConsentError",
    "ConsentRequest",
    "ConsentRequired",
    "ConsentStatus",
    "Decision",
    "DocumentError",
    "DocumentLimits",
    "DocumentTooLarge",
    "Gate",
    "Grant",
    "GrantKind",
    "Ionwall",
    "IonwallError",
    "KeyFileError",
    "Masker",
    "PermissionDenied",
    "Policy",
    "PolicyError",
    "RevocationFeed",
    "RevocationFeedLost",
    "Scope",
    "ScopeError",
    "StoreError",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenNotYetValid",
    "TokenRevoked",
    "TrustedPublisher",
    "UnknownConsent",
    "UnknownGrant",
    "compose_yaml",
    "connect_read_only",
    "covers",
    "decode_public_key",
    "describe_scope",
    "encode_public_key",
    "format_duration",
    "load_policy",
    "load_yaml",
    "migrate_postgres",
    "narrow",
    "parse_duration",
    "parse_scope",
    "parse_scopes",
    "policy_from_dict",
    "read_only",
    "read_text",
    "render_prompt",
    "sign_cid",
    "verify_cid_signature",
    "verify_token",
]


def _isort(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize(("package", "pinned"), [(ionflux, IONFLUX), (ionwall, IONWALL)])
def test_all_is_pinned_by_content_and_sorted(package: object, pinned: list[str]) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    assert names == sorted(names, key=_isort)  # constants, classes, functions (ruff RUF022)
    assert set(names) == set(pinned)
    assert len(names) == len(pinned)
    for name in names:
        assert getattr(package, name) is not None, name


def test_every_error_has_one_root() -> None:
    errors = [
        getattr(ionflux, name)
        for name in ionflux.__all__
        if isinstance(getattr(ionflux, name), type)
        and issubclass(getattr(ionflux, name), Exception)
    ]
    assert len(errors) > 40
    assert all(issubclass(err, ionflux.IonfluxError) for err in errors)
