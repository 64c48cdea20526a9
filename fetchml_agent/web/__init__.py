"""The agent's home page (docs/observe.md): your workspaces, their use and reports; for admins the
package requests and the audit log. Server-rendered (Jinja2), no script; :mod:`.app`."""
