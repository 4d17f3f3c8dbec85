"""Bring-your-own scanners: external guardrails an officer adds per tenant or per alias
(``GuardrailScanner``), checked before the provider is called (on everything the client sent) and
after it (on the reply).

- ``base``: what a scanner is given (``ScanRequest`` of ``ScanText``), what it answers
  (``ScanVerdict``), how it fails (``ScannerFailed``), and ``ScannerConfig``, the snapshot of a
  row the request path works from;
- ``policy``: the checks a configuration passes before it is saved (admin form,
  ``apply_config``) and again before a call leaves: the egress allow-list, no link-local or
  cloud-metadata address unless named, secret references, bounded timeouts;
- ``http`` (the gateway's own JSON contract, see docs/security.md), ``bedrock`` (AWS Bedrock
  Guardrails' ``ApplyGuardrail``), ``presidio`` (a Presidio analyzer's ``POST /analyze``): the
  adapters;
- ``registry``: one adapter per scanner revision, as providers have.

The stage that runs them is ``gateway.pipeline.scan``.
"""
