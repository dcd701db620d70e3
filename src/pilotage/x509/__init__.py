"""X.509 certificates, RFC 3820 proxies and grid trust directories.

One library for the switch (``pilotage-exec``) and the server's credential code. It
imports the standard library and ``cryptography`` only, nothing else of pilotage (a test
enforces it), so a site installs it beside the switch and reviews it alone.

Modules, in reading order: ``errors`` (one exception per refusal), ``der`` (the DER read
by hand), ``certificate`` (one credential file, one certificate), ``namespaces`` (which
subjects each CA may sign), ``trust_store`` (the CA directory), ``chain``
(``validate_chain``: every rule), ``proxy_info`` (a description without judgement).

Import from the modules themselves: this file imports nothing, so that the switch's
fast path (a cached decision) never loads ``cryptography``.
"""
