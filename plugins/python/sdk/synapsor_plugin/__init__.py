"""The synapsor plugin SDK for Python: write a gateway plugin as a class.

```python
from synapsor_plugin import Plugin, Code, Reject, export, set_header

class AddEnv(Plugin):
    def __init__(self, config):          # the plugin's `config:` from the YAML, parsed JSON
        self.env = (config or {}).get("env", "prod")

    def on_request(self, req):            # None, a list of header changes, or a Reject
        if req.header("x-tenant") is None:
            raise Reject(Code.INVALID_ARGUMENT, "missing x-tenant")
        return [set_header("x-env", self.env)]

WitWorld = export(AddEnv)                 # what componentize-py builds the component from
```

``on_request`` and ``on_response`` default to "go on unchanged" (the gateway still calls an
undefined ``on_response`` unless the YAML says ``on_response: false``), and the message hooks
are only called when the class defines them (the gateway then splits the call's stream into
messages). ``print`` and ``logging`` write to the gateway's log. The contract is ``wit/plugin.wit``
(``synapsor:plugin@0.2.1``, world ``interceptor``); ``plugins/python/build.sh`` builds a
component with ``componentize-py``.
"""

import json
import logging
import sys
import traceback

from componentize_py_types import Err
import wit_world
from wit_world.imports import types

from .actions import (Headers, OverrideStatus, Reject, Replace, append_header, header_ops,
                      remove_header, set_header)
from .code import Code
from .host import (GatewayHandler, Level, LogWriter, counter_add, log, now_unix_nanos,
                   properties)
from .info import Message, Request, Response
from . import callout, metrics, state, wire

__all__ = [
    "Plugin", "export", "settings", "Code", "Reject", "Replace", "OverrideStatus",
    "set_header", "append_header", "remove_header", "Request", "Response", "Message",
    "Headers", "Level", "log", "counter_add", "now_unix_nanos", "properties", "callout",
    "metrics", "state", "wire",
]


class Plugin:
    """A plugin: subclass it, define the hooks you need, and ``export`` the class.

    ``__init__(config)`` runs once per instance with the YAML ``config:`` parsed from JSON
    (None when there is none); raising there stops the plugin from loading, with the error
    in the gateway's log.
    """

    def __init__(self, config):
        self.config = config

    def on_request(self, req: Request):
        """Before the call is forwarded: None, header changes, or a :class:`Reject`."""
        return None

    def on_response(self, resp: Response):
        """Once the status is known: None, trailer changes, or an :class:`OverrideStatus`."""
        return None

    def on_request_message(self, msg: Message):
        """Each request message (only when a subclass defines it): None, :class:`Replace`
        or :class:`Reject`."""
        return None

    def on_response_message(self, msg: Message):
        """Each response message (only when a subclass defines it), as above."""
        return None


def _kind(v) -> str:
    """The YAML kind of a value: what `settings` compares a key's value with its default by."""
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    for t, name in ((str, "a string"), (list, "a list"), (dict, "a map")):
        if isinstance(v, t):
            return name
    return "null" if v is None else type(v).__name__


def settings(config, **defaults):
    """``config`` (a dict or None) over ``defaults``, as an object with attributes. A key not
    among the defaults, or a value of another kind than its default (a string where the
    default is a number, …; a default of None takes anything), raises ``ValueError`` naming the
    key, as Rust's ``deny_unknown_fields`` and typed fields do."""
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ValueError(f"config must be a map, not {_kind(config)}")
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"unknown config key `{unknown[0]}`; expected one of "
                         + ", ".join(f"`{k}`" for k in defaults))
    out = type("Settings", (), {})()
    for k, v in defaults.items():
        given = config.get(k, v)
        if v is not None and _kind(given) != _kind(v):
            raise ValueError(f"config key `{k}` must be {_kind(v)}, not {_kind(given)}")
        setattr(out, k, given)
    return out


def _message_action(answer):
    if answer is None:
        return types.MessageAction_Continue()
    if isinstance(answer, Replace):
        return types.MessageAction_Replace(answer.data)
    if isinstance(answer, Reject):
        return types.MessageAction_Reject(answer.to_wit())
    raise TypeError(f"a message hook answered {type(answer).__name__}")


def _on_message(hook, name: str, msg):
    """Runs a message hook and turns its answer (or raised Reject) into the contract's."""
    try:
        return _message_action(hook(msg))
    except Reject as r:
        return types.MessageAction_Reject(r.to_wit())
    except BaseException:
        _fail(name)
        raise


def _fail(hook: str):
    """Logs the exception a hook raised, then lets it end the instance (a trap: the call
    gets the plugin's failure outcome, `on_error`)."""
    log(Level.ERROR, f"{hook} raised: {traceback.format_exc(limit=8)}")


def export(cls):
    """The ``WitWorld`` class componentize-py exports, serving instances of ``cls``."""
    held = []

    class WitWorld(wit_world.WitWorld):
        def init(self, config: str) -> types.Hooks:
            logging.getLogger().addHandler(GatewayHandler())
            logging.getLogger().setLevel(logging.INFO)
            sys.stdout = LogWriter(Level.INFO)
            sys.stderr = LogWriter(Level.WARN)
            try:
                held[:] = [cls(json.loads(config))]
            except Exception as e:  # noqa: BLE001 - any error stops the load, with its text
                raise Err(f"{type(e).__name__}: {e}")
            hooks = types.Hooks(0)
            if cls.on_request_message is not Plugin.on_request_message:
                hooks |= types.Hooks.REQUEST_MESSAGES
            if cls.on_response_message is not Plugin.on_response_message:
                hooks |= types.Hooks.RESPONSE_MESSAGES
            return hooks

        def on_request(self, info):
            try:
                answer = held[0].on_request(Request(info))
                if isinstance(answer, Reject):
                    return types.RequestAction_Reject(answer.to_wit())
                return types.RequestAction_Continue(header_ops(answer, "on_request"))
            except Reject as r:
                return types.RequestAction_Reject(r.to_wit())
            except BaseException:
                _fail("on_request")
                raise

        def on_response(self, info):
            try:
                answer = held[0].on_response(Response(info))
                if isinstance(answer, OverrideStatus):
                    return types.ResponseAction_OverrideStatus(
                        types.StatusOverride(answer.code, answer.message))
                return types.ResponseAction_Continue(header_ops(answer, "on_response"))
            except BaseException:
                _fail("on_response")
                raise

        def on_request_message(self, msg):
            return _on_message(held[0].on_request_message, "on_request_message", msg)

        def on_response_message(self, msg):
            return _on_message(held[0].on_response_message, "on_response_message", msg)

    return WitWorld
