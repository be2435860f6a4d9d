"""exchange.signing and exchange.keys: who signed a value, with which key, and whether it is the one expected."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from exchange import contract, keys, signing

from .processes import SUPERVISOR_KEY, environment_key, environment_public_key


@pytest.fixture
def only_supervisor(settings):
    """A supervisor process: its own key only, environments known through the keys it published."""
    settings.APP_SIGNING_KEYS = {"supervisor": SUPERVISOR_KEY}
    keys.published.reset()
    yield
    keys.published.reset()


def test_a_value_verifies_as_its_signer_and_names_it_with_its_key_id():
    sealed = signing.dumps({"a": 1}, signer="env_a")
    assert sealed.startswith(b"appsup2:env_a:" + keys.key_id(environment_public_key("env_a")).encode() + b":")
    assert signing.loads(sealed, "env_a") == {"a": 1}
    assert signing.open_sealed(sealed) == ("env_a", b'{"a":1}')


def test_another_signer_than_the_one_expected_is_refused():
    sealed = signing.dumps({"name": "env_a"}, signer="env_b")
    with pytest.raises(signing.BadSignature, match="signed by 'env_b', not by 'env_a'"):
        signing.loads(sealed, "env_a")
    assert signing.loads_or_none(sealed, signing.SUPERVISOR) is None


def test_a_forged_signer_name_does_not_verify():
    """env_b's signature relabelled as env_a's: the key id is not one of env_a's."""
    sealed = signing.dumps({"name": "env_a"}, signer="env_b")
    forged = sealed.replace(b"appsup2:env_b:", b"appsup2:env_a:", 1)
    with pytest.raises(signing.BadSignature, match="not enrolled"):
        signing.unseal(forged, "env_a")


def test_env_b_claiming_to_be_the_supervisor_is_refused():
    forged = signing.dumps({"x": 1}, signer="supervisor", key=environment_key("env_b"))
    with pytest.raises(signing.BadSignature, match="not one of this deployment's"):
        signing.unseal(forged, signing.SUPERVISOR)


def test_a_wrong_key_id_is_refused():
    sealed = signing.dumps({"a": 1}, signer="env_a")
    kid = keys.key_id(environment_public_key("env_a")).encode()
    with pytest.raises(signing.BadSignature, match="not enrolled"):
        signing.unseal(sealed.replace(kid, b"0" * 16, 1), "env_a")


def test_altered_bytes_do_not_verify():
    sealed = signing.dumps({"state": "running"}, signer="env_a")
    with pytest.raises(signing.BadSignature, match="does not verify"):
        signing.unseal(sealed.replace(b"running", b"stopped"), "env_a")
    with pytest.raises(signing.BadSignature, match="not signed"):
        signing.unseal(b"appsup1:" + b"0" * 64 + b':{"state":"running"}')


def test_a_process_without_the_signers_key_cannot_sign_as_it(settings):
    settings.APP_SIGNING_KEYS = {"env_b": environment_key("env_b")}
    with pytest.raises(ImproperlyConfigured, match="no key of environment 'env_a'"):
        signing.dumps({}, signer="env_a")
    with pytest.raises(ImproperlyConfigured, match="APP_SUPERVISOR_KEY"):
        signing.dumps({}, signer="supervisor")


def test_environment_keys_come_from_what_the_supervisor_published(r, only_supervisor):
    sealed = signing.dumps({"a": 1}, signer="env_a", key=environment_key("env_a"))
    with pytest.raises(signing.BadSignature, match="not enrolled"):
        signing.unseal(sealed, "env_a")
    keys.publish(r, {"env_a": [environment_public_key("env_a")]})
    assert signing.unseal(sealed, "env_a") == b'{"a":1}'


def test_keys_published_by_anyone_but_the_supervisor_are_ignored(r, only_supervisor):
    r.hset(contract.ENVIRONMENT_KEYS_KEY, "env_a", signing.dumps(
        {"environment": "env_a", "keys": [environment_public_key("env_a")]}, signer="env_a",
        key=environment_key("env_a")))
    with pytest.raises(signing.BadSignature, match="not enrolled"):
        signing.unseal(signing.dumps({}, signer="env_a", key=environment_key("env_a")), "env_a")


def test_a_rotated_environment_key_and_the_old_one_are_both_valid_until_the_old_is_retired(r, only_supervisor):
    new_private, new_public = keys.generate()
    old = signing.dumps({"n": 1}, signer="env_a", key=environment_key("env_a"))
    new = signing.dumps({"n": 2}, signer="env_a", key=new_private)
    keys.publish(r, {"env_a": [environment_public_key("env_a"), new_public]})
    assert signing.loads(old, "env_a") == {"n": 1} and signing.loads(new, "env_a") == {"n": 2}
    keys.publish(r, {"env_a": [new_public]})
    assert signing.loads_or_none(old, "env_a") is None and signing.loads(new, "env_a") == {"n": 2}


def test_a_rotated_supervisor_key_verifies_on_workers_listing_both(settings):
    new_private, new_public = keys.generate()
    settings.APP_SIGNING_KEYS = {"env_a": environment_key("env_a")}  # a worker: no supervisor private key
    old = signing.dumps({"n": 1}, signer="supervisor", key=SUPERVISOR_KEY)
    new = signing.dumps({"n": 2}, signer="supervisor", key=new_private)
    settings.APP_SUPERVISOR_PUBLIC_KEYS = (keys.public_text(keys.private_key(SUPERVISOR_KEY)),)
    assert signing.loads_or_none(new, "supervisor") is None
    settings.APP_SUPERVISOR_PUBLIC_KEYS = (keys.public_text(keys.private_key(SUPERVISOR_KEY)), new_public)
    assert signing.loads(old, "supervisor") == {"n": 1} and signing.loads(new, "supervisor") == {"n": 2}
    settings.APP_SUPERVISOR_PUBLIC_KEYS = (new_public,)
    assert signing.loads_or_none(old, "supervisor") is None


def test_a_key_that_is_not_one_is_refused_with_its_name():
    with pytest.raises(keys.BadKey, match="APP_ENVIRONMENT_KEY is not an Ed25519 key"):
        keys.private_key("c2hvcnQ=", "APP_ENVIRONMENT_KEY")
    with pytest.raises(keys.BadKey, match="at most 2"):
        keys.valid_public_keys([keys.generate()[1] for _ in range(3)])
