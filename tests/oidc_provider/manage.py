#!/usr/bin/env python
"""Run the test OIDC provider by hand, from the repository root:

    python tests/oidc_provider/manage.py serve_oidc_provider --port 8800 \
        --client-id portal --client-secret s3cret \
        --redirect-uri http://localhost:8000/oauth/complete/oidc/ \
        --user bob:bob-pass:bob@example.com
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oidc_provider.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
