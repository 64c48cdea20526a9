"""Access to JupyterLab: personal credentials, roles enforced in the server, sessions, MFA, allowlists.

The agent is the one authority: a workspace's Jupyter Server (with the ``fetchml_jupyter``
extension, shipped by this project) asks it who each credential is and what that person may do,
and feeds JupyterLab's events back into the audit log. docs/access.md has the role table, the
login flow, sessions, MFA, allowlists and what the audit records.

    config.py    agent.yaml ``access:`` (schema and typed settings)
    roles.py     the one role table for JupyterLab
    keys.py      the access key file; personal and session token codecs; sealing
    networks.py  allowlists and X-Forwarded-For
    mfa.py       TOTP and recovery codes
    service.py   AccessService: resolve, login, sessions, MFA, revocation
    http.py      /access/v1/...: the endpoints workspace servers call
    guard.py     allowlists and the admin second factor on the agent's own API
    ops.py       ``ml auth ...`` operations, ``ml jupyter password``, what agent.build_services wires
"""
