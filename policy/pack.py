"""Adapters from the pulumi-policy runtime to `policy.rules` (importable without starting the pack)."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

from policy import rules


def _resource(args) -> rules.Resource:
    opts = getattr(args, "opts", None)
    return rules.Resource(args.resource_type, args.name, dict(args.props), bool(getattr(opts, "protect", False)))


def _resource_policy(rule: rules.Rule) -> ResourceValidationPolicy:
    def validate(args, report_violation):
        for violation in rule.check(_resource(args)):
            report_violation(violation)

    return ResourceValidationPolicy(
        name=rule.name, description=rule.description, validate=validate, enforcement_level=EnforcementLevel.MANDATORY
    )


def _stack_policy(rule: rules.Rule) -> StackValidationPolicy:
    def validate(args, report_violation):
        resources = [
            rules.Resource(r.resource_type, r.name, dict(r.props), bool(getattr(r.opts, "protect", False)))
            for r in args.resources
        ]
        for violation in rule.check(resources):
            report_violation(violation)

    return StackValidationPolicy(
        name=rule.name, description=rule.description, validate=validate, enforcement_level=EnforcementLevel.MANDATORY
    )


POLICIES = [(_stack_policy if rule.stack else _resource_policy)(rule) for rule in rules.RULES]
