"""Data-subject requests (GDPR Art. 12, 15, 17, 20; CCPA): access (export), erasure, opt-out.

The package is split by job: ``deadlines`` (due dates, overdue), ``selectors`` (signed ids
and reads), ``services`` (creating, verifying and the officers' decisions, each audited in
its transaction), ``execution`` (carrying out access, erasure and opt-out), ``export`` (the
access/portability export and its one-time link) and ``mail`` (emails to the subject).

Life of a request::

    received --verify--> verified --approve--> approved --execute--> in_progress --> completed
        \\-------------------\\----------reject-----/                          \\--> failed
                                                                           (retried, resumed)

* Identity first: nothing is approved or executed before the request is ``verified`` (Fides
  advisory GHSA-qx5f-ghc2-7g5c). A request from the public page is verified by a one-time code
  sent to the email registered for the subject. A request that the tenant's app makes through
  the API, authenticated with the tenant's key, on behalf of one of its own users
  (``external_id``) counts as verified by the tenant: the tenant has authenticated its user and
  answers for that, as a controller does for its processor (the gateway).
* Deadlines are computed when the request is received: GDPR one calendar month (Art. 12(3)),
  extendable once by up to two further months with a recorded reason before the month ends;
  CCPA 45 days, acknowledged within 10 business days.
* Execution runs in a Celery task (``privacy.request_tasks``): the request is claimed with a
  conditional UPDATE, so a second run of the same task does nothing, and a run that crashed (a
  request left ``in_progress`` for ``LLMP_PRIVACY_STALL_MINUTES``) is claimed again by the
  periodic resume task. Erasure runs the data map and writes its receipt and the final state in
  one transaction, so a crash leaves either nothing done in the database or everything.
* Every step writes an audit row; audit rows, receipts, ``last_error`` and emails carry no
  personal data beyond what the subject must be told.
"""
