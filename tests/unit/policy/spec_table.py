"""The spec table: every form pip and conda accept, with the decision the policy must give.

Shared by the unit suite (``test_policy_spec_table.py``) and the index agreement test
(``tests/integration/index/test_index_agreement.py``).
Rows: ``(spec, conda, decision, package, rule)``; ``decision`` is ``allow``, ``deny``,
``approval_required`` or ``refused`` (the parser raises InvalidArgument; package/rule unused).
"""

from __future__ import annotations

from fetchml_agent.policy.schema import (
    effective_policy,
    policy_from_document,
    workspace_security_from_document,
)

# The seed's global policy plus approval_required from the seed's workspace-security.yaml, and a
# workspace that also blocks evil-pkg.
POLICY = effective_policy(
    policy_from_document({"approval_required": ["tensorflow", "pytorch", "custom-package"]}, source="table"),
    workspace_security_from_document({"blocked_packages": ["evil-pkg"]}, source="table-workspace"),
)
# This workspace's approved requests: custom-package in a range, pytorch any version.
APPROVED = [("custom-package", ">=1.0,<2"), ("pytorch", "")]

A, D, R, X = "allow", "deny", "approval_required", "refused"
H = "host.invalid"  # never resolved: no row is fetched

ROWS: list[tuple[str, bool, str, str | None, str | None]] = [
    # --- pip: plain requirements that install ---
    ("numpy", False, A, "numpy", "default_allow"),
    ("NumPy", False, A, "numpy", "default_allow"),
    ("  numpy  ", False, A, "numpy", "default_allow"),
    ("pandas==2.0.0", False, A, "pandas", "default_allow"),
    ("scikit-learn>=1.3,<2", False, A, "scikit-learn", "default_allow"),
    ("scikit_learn", False, A, "scikit-learn", "default_allow"),
    ("python.dateutil", False, A, "python-dateutil", "default_allow"),
    ("six~=1.16", False, A, "six", "default_allow"),
    ("six!=1.15", False, A, "six", "default_allow"),
    ("six===1.16.0", False, A, "six", "default_allow"),
    ("pandas==2.0.*", False, A, "pandas", "default_allow"),
    ("pandas [excel,  performance] >= 2.0", False, A, "pandas", "default_allow"),
    ("six; python_version < \"4\"", False, A, "six", "default_allow"),
    ("six ; sys_platform == \"win32\"", False, A, "six", "default_allow"),
    ("pandas[Excel]", False, A, "pandas", "default_allow"),
    ("attrs>1,<=99", False, A, "attrs", "default_allow"),
    ("FrIeNdLy-._.-bArD", False, A, "friendly-bard", "default_allow"),
    ("--pre", False, A, None, "installer_option"),
    ("--upgrade", False, A, None, "installer_option"),
    ("-U", False, A, None, "installer_option"),
    ("--no-deps", False, A, None, "installer_option"),
    ("--only-binary :all:", False, A, None, "installer_option"),
    ("--hash=sha256:0123abcd", False, A, None, "installer_option"),
    # --- pip: approved requests ---
    ("custom-package==1.5", False, A, "custom-package", "approved_request"),
    ("custom-package", False, A, "custom-package", "approved_request"),
    ("Custom_Package>=1.0,<2", False, A, "custom-package", "approved_request"),
    ("pytorch==2.1", False, A, "pytorch", "approved_request"),
    # --- pip: blocked names, every spelling ---
    ("requests", False, D, "requests", "blocked_packages"),
    ("Requests", False, D, "requests", "blocked_packages"),
    ("REQUESTS==2.31.0", False, D, "requests", "blocked_packages"),
    ("requests[socks]", False, D, "requests", "blocked_packages"),
    ("requests>=2; python_version>=\"3\"", False, D, "requests", "blocked_packages"),
    ("urllib3", False, D, "urllib3", "blocked_packages"),
    ("URLLIB3<2", False, D, "urllib3", "blocked_packages"),
    ("socket", False, D, "socket", "blocked_packages"),
    ("subprocess", False, D, "subprocess", "blocked_packages"),
    ("os.system", False, D, "os-system", "blocked_packages"),
    ("os_system", False, D, "os-system", "blocked_packages"),
    ("OS-System", False, D, "os-system", "blocked_packages"),
    ("os..system", False, D, "os-system", "blocked_packages"),
    ("evil-pkg", False, D, "evil-pkg", "blocked_packages"),
    ("Evil_Pkg", False, D, "evil-pkg", "blocked_packages"),
    (f"requests @ https://{H}/requests-2.0-py3-none-any.whl", False, D, "requests", "blocked_packages"),
    # --- pip: forms that go around the index ---
    (f"foo @ https://{H}/foo-1.0-py3-none-any.whl", False, D, "foo", "direct_url"),
    ("foo @ file:///tmp/foo-1.0.tar.gz", False, D, "foo", "direct_url"),
    (f"foo @ git+https://{H}/foo.git@v1", False, D, "foo", "vcs"),
    (f"https://{H}/pkgs/foo-1.0-py3-none-any.whl", False, D, "foo", "url"),
    (f"http://{H}/foo-1.0.tar.gz", False, D, "foo", "url"),
    ("file:///tmp/foo-1.0.zip", False, D, "foo", "url"),
    (f"git+https://{H}/foo.git", False, D, None, "vcs"),
    (f"git+ssh://git@{H}/foo.git#egg=foo", False, D, "foo", "vcs"),
    (f"git+https://{H}/foo.git@v1.0#egg=foo&subdirectory=sub", False, D, "foo", "vcs"),
    (f"hg+https://{H}/foo#egg=foo", False, D, "foo", "vcs"),
    (f"svn+svn://{H}/foo", False, D, None, "vcs"),
    ("bzr+lp:foo", False, D, None, "vcs"),
    ("./downloads/foo-1.0-py3-none-any.whl", False, D, "foo", "local_path"),
    ("foo-1.0-py3-none-any.whl", False, D, "foo", "local_path"),
    ("foo-1.0.tar.gz", False, D, "foo", "local_path"),
    (".", False, D, None, "local_path"),
    ("./project", False, D, None, "local_path"),
    ("/abs/project", False, D, None, "local_path"),
    ("~/project", False, D, None, "local_path"),
    ("-e .", False, D, None, "editable"),
    (f"-e git+https://{H}/foo.git#egg=foo", False, D, "foo", "editable"),
    ("--editable=./proj", False, D, None, "editable"),
    ("-r requirements.txt", False, D, None, "requirements_file"),
    ("--requirement=reqs.txt", False, D, None, "requirements_file"),
    ("-c constraints.txt", False, D, None, "constraints_file"),
    (f"-i http://{H}/simple", False, D, None, "index_option"),
    (f"--index-url=http://{H}/simple", False, D, None, "index_option"),
    (f"--extra-index-url http://{H}/simple", False, D, None, "index_option"),
    (f"-f http://{H}/links", False, D, None, "index_option"),
    ("--find-links /tmp/wheels", False, D, None, "index_option"),
    (f"--trusted-host {H}", False, D, None, "index_option"),
    ("--no-index", False, D, None, "index_option"),
    ("--target /tmp/t", False, D, None, "location_option"),
    ("--user", False, D, None, "location_option"),
    ("--prefix /tmp/p", False, D, None, "location_option"),
    ("--root /tmp/r", False, D, None, "location_option"),
    # --- pip: needs approval ---
    ("tensorflow", False, R, "tensorflow", "approval_required"),
    ("TensorFlow==2.15", False, R, "tensorflow", "approval_required"),
    ("tensorflow[and-cuda]", False, R, "tensorflow", "approval_required"),
    ("custom-package==2.5", False, R, "custom-package", "approval_required"),
    ("custom-package>=3", False, R, "custom-package", "approval_required"),
    # --- pip: refused, never guessed at ---
    ("r\u0435quests", False, X, None, None),  # Cyrillic ie
    ("nump\u0443", False, X, None, None),  # Cyrillic u
    ("requests\n", False, X, None, None),
    ("numpy\nrequests", False, X, None, None),
    ("six\r", False, X, None, None),
    ("six\x00", False, X, None, None),
    ("", False, X, None, None),
    ("   ", False, X, None, None),
    ("req uests", False, X, None, None),
    ("numpy==", False, X, None, None),
    ("numpy>=1.*", False, X, None, None),
    ("-numpy", False, X, None, None),
    ("--global-option=--prefix=/x", False, X, None, None),
    ("${PKG}", False, X, None, None),
    ("numpy; python_version <", False, X, None, None),
    ("numpy[", False, X, None, None),
    (f"@ https://{H}/x", False, X, None, None),
    ("\ufb01le", False, X, None, None),  # the "fi" ligature
    ("\uff4e\uff55\uff4d\uff50\uff59", False, X, None, None),  # full-width numpy
    ("num\u200bpy", False, X, None, None),  # zero-width space
    ("-r", False, X, None, None),
    ("--user extra", False, X, None, None),
    # --- conda ---
    ("numpy", True, A, "numpy", "default_allow"),
    ("conda-forge::numpy", True, A, "numpy", "default_allow"),
    ("conda-forge/linux-64::numpy>=1.0", True, A, "numpy", "default_allow"),
    ("defaults::scipy", True, A, "scipy", "default_allow"),
    ("nvidia::cuda-toolkit", True, A, "cuda-toolkit", "default_allow"),
    ("pytorch::pytorch", True, A, "pytorch", "approved_request"),
    ("numpy=1.21", True, A, "numpy", "default_allow"),
    ("numpy 1.21 py_0", True, A, "numpy", "default_allow"),
    ("numpy=1.21=py_0", True, A, "numpy", "default_allow"),
    ("numpy[channel=conda-forge]", True, A, "numpy", "default_allow"),
    ("numpy[version='>=1.0', build=py_0]", True, A, "numpy", "default_allow"),
    ("-c conda-forge", True, A, None, "trusted_channels"),
    ("--channel=nvidia", True, A, None, "trusted_channels"),
    ("--override-channels", True, A, None, "installer_option"),
    ("evil-channel::numpy", True, D, "numpy", "trusted_channels"),
    ("numpy[channel=evil]", True, D, "numpy", "trusted_channels"),
    ("conda-forge::numpy[channel=evil]", True, D, "numpy", "trusted_channels"),
    ("*/linux-64::numpy", True, D, "numpy", "trusted_channels"),
    (f"https://{H}/conda-forge::numpy", True, D, "numpy", "trusted_channels"),
    ("conda-forge/label/dev::numpy", True, D, "numpy", "trusted_channels"),
    ("-c evil", True, D, None, "trusted_channels"),
    ("--use-local", True, D, None, "trusted_channels"),
    ("conda-forge::requests", True, D, "requests", "blocked_packages"),
    ("requests", True, D, "requests", "blocked_packages"),
    (f"https://{H}/linux-64/numpy-1.0-py_0.conda", True, D, "numpy", "url"),
    ("./numpy-1.0-0.tar.bz2", True, D, "numpy", "local_path"),
    (f"numpy[url=https://{H}/numpy-1.0-py_0.conda]", True, D, "numpy", "url"),
    ("-n other", True, D, None, "location_option"),
    ("--file env.txt", True, D, None, "requirements_file"),
    ("tensorflow", True, R, "tensorflow", "approval_required"),
    ("custom-package=1.5", True, R, "custom-package", "approval_required"),
    ("num*", True, X, None, None),
    ("numpy[evil=1]", True, X, None, None),
    ("a::b::c", True, X, None, None),
    ("conda-forge::nump\u0443", True, X, None, None),
    ("-c conda-forge --override-channels", True, X, None, None),
    ("-c", True, X, None, None),
]
