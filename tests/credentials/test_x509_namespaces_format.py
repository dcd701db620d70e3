"""The two namespace policy formats, read alone: IGTF ``.namespaces`` and Globus EACL."""

from __future__ import annotations

import pytest

from pilotage.credentials.names import parse_subject
from pilotage.credentials.x509_testing import forge
from pilotage.x509.namespaces import (
    PolicySyntaxError,
    SubjectRule,
    decide,
    parse_namespaces,
    parse_signing_policy,
)


def allowed(rules: tuple[SubjectRule, ...], subject: str) -> bool:
    return decide(parse_subject(subject), rules)[0]


def test_namespaces_rules_continuations_comments_and_aliases() -> None:
    policy = parse_namespaces(
        "##############\n"
        "#NAMESPACES-VERSION: 1.0\n"
        '# "quoted" text in a comment is a comment\n'
        'TO Issuer "/C=NL/O=Example/CN=Example CA #1" \\\n'
        '   PERMIT Subject "/C=NL/O=Example/OU=(users|hosts)/.*"\n'
        "\n"
        'TO Issuer "/C=NL/O=Example/CN=Example CA #1" PERMIT Subject "/C=NL/Email=ca@ex\\.org"\n'
        'TO Issuer "/O=Other/CN=Other CA" PERMIT Subject ".*"\n',
        "x.namespaces",
    )
    ca, _ = forge(parse_subject("/C=NL/O=Example/CN=Example CA #1"), None)
    rules = policy.rules_for(ca)
    assert [r.line for r in rules] == [4, 7]
    assert allowed(rules, "/C=NL/O=Example/OU=hosts/CN=node1") is True
    assert allowed(rules, "/c=nl/o=EXAMPLE/ou=Users/CN=Ann") is True  # case is ignored
    assert allowed(rules, "/C=NL/O=Example/OU=robots/CN=r2d2") is False
    assert allowed(rules, "/C=NL/O=Example/OU=hosts") is False  # the pattern wants more
    assert allowed(rules, "/C=NL/emailAddress=CA@EX.ORG") is True  # alias and case folded
    assert allowed(rules, "/C=NL/emailAddress=ca@exxorg") is False  # "\." is a literal dot


def test_signing_policy_globs_are_literal_but_for_the_star() -> None:
    policy = parse_signing_policy(
        "# EACL\n"
        " access_id_CA   X509   '/O=Example/CN=Example CA'\n"
        " pos_rights     globus CA:sign\n"
        ' cond_subjects  globus \'"/O=Example/*" "/O=Ex.mple (old)/CN=?"\'\n'
        "access_id_CA X509 '/O=Other/CN=Other CA'\npos_rights globus CA:sign\n"
        "cond_subjects globus '\"/O=Other/*\"'\n",
        "x.signing_policy",
    )
    ca, _ = forge(parse_subject("/O=Example/CN=Example CA"), None)
    rules = policy.rules_for(ca)
    assert [r.text for r in rules] == ["/O=Example/*", "/O=Ex.mple (old)/CN=?"]
    assert allowed(rules, "/O=Example/OU=a/CN=Ann") is True  # '*' crosses '/'
    assert allowed(rules, "/O=Ex.mple (old)/CN=?") is True
    assert allowed(rules, "/O=Exxmple (old)/CN=a") is False  # '.' and '?' are literal
    assert allowed(rules, "/O=Other/CN=Bob") is False  # another CA's entry


@pytest.mark.parametrize(
    "text",
    [
        'TO Issuer SELF PERMIT Subject "/O=A/.*" extra\n',
        'TO Subject SELF PERMIT Subject "/O=A/.*"\n',
        'TO Issuer SELF ALLOW Subject "/O=A/.*"\n',
        'TO Issuer "/O=A PERMIT Subject "/O=A/.*"\n',
    ],
)
def test_namespaces_syntax_errors_name_the_line(text: str) -> None:
    with pytest.raises(PolicySyntaxError, match=r"^line 2: "):
        parse_namespaces("# first\n" + text, "x.namespaces")
