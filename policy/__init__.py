"""The settlement platform's guardrails as a Pulumi CrossGuard policy pack (`pulumi preview --policy-pack policy`)."""
