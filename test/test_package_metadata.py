"""package.xml, setup.py, requirements and the code agree with each other."""
import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# ROS packages that have no PyPI wheel here (provided by a full ROS 2 install only).
NO_WHEEL = {"launch", "launch_ros", "rosidl_runtime_py", "ament_index_python", "rcl_interfaces"}
ROS_MODULES = {"rclpy", "std_msgs", "builtin_interfaces", "sensor_msgs", "geometry_msgs",
               "trajectory_msgs", "diagnostic_msgs", "lifecycle_msgs", "rosgraph_msgs", "std_srvs",
               "rcl_interfaces", "launch", "launch_ros", "ament_index_python", "oat_ros_interfaces",
               "rosidl_runtime_py"}


def package_xml(path):
    root = ET.parse(path).getroot()
    deps = {e.tag: set() for e in root}
    for e in root:
        deps.setdefault(e.tag, set()).add((e.text or "").strip())
    return root.findtext("name"), root.findtext("version"), deps


def setup_py_constant(name):
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {name}")


def imported_top_modules(paths):
    mods = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods


def test_names_and_versions_agree():
    name, version, _ = package_xml(REPO / "package.xml")
    assert name == setup_py_constant("PACKAGE") == "oat_ros"
    assert version == setup_py_constant("VERSION")
    import oat_ros
    assert oat_ros.__version__ == version
    iname, iversion, _ = package_xml(REPO / "oat_ros_interfaces" / "package.xml")
    assert iname == "oat_ros_interfaces" and iversion == version


def test_every_ros_import_is_declared_in_package_xml():
    _, _, deps = package_xml(REPO / "package.xml")
    declared = deps.get("exec_depend", set()) | deps.get("depend", set())
    code = [p for d in ("oat_ros", "sim_bridge", "launch") for p in (REPO / d).rglob("*.py")]
    used = imported_top_modules(code) & ROS_MODULES
    missing = used - declared
    assert not missing, f"imported but not in package.xml exec_depend: {sorted(missing)}"


def test_every_declared_ros_dependency_is_installed_by_the_requirements():
    _, _, deps = package_xml(REPO / "package.xml")
    declared = (deps.get("exec_depend", set()) | deps.get("depend", set())) & ROS_MODULES
    req = (REPO / "requirements" / "venv.txt").read_text()
    wheels = set(re.findall(r"^ros-kilted-([a-z0-9-]+)", req, re.M))
    for dep in declared - NO_WHEEL - {"oat_ros_interfaces"}:
        assert dep.replace("_", "-") in wheels, f"{dep}: no ros-kilted-* wheel in requirements/venv.txt"


def test_interface_package_lists_every_message():
    cmake = (REPO / "oat_ros_interfaces" / "CMakeLists.txt").read_text()
    for msg in (REPO / "msg").glob("*.msg"):
        assert f'"msg/{msg.name}"' in cmake, f"{msg.name} not in rosidl_generate_interfaces"
    assert (REPO / "oat_ros_interfaces" / "msg").resolve() == (REPO / "msg").resolve()


def test_console_scripts_point_at_existing_functions():
    import importlib
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = [ast.literal_eval(n) for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and " = " in n.value and ":" in n.value]
    assert scripts, "no console_scripts found"
    for spec in scripts:
        name, target = (s.strip() for s in spec.split("="))
        module, func = target.split(":")
        if importlib.util.find_spec(module) is None:
            raise AssertionError(f"console script {name}: module {module} does not exist")
        src = Path(importlib.util.find_spec(module).origin).read_text()
        assert f"def {func}(" in src, f"console script {name}: {module} has no {func}()"


def test_launch_files_only_name_installed_executables():
    tree = ast.parse((REPO / "setup.py").read_text())
    names = {ast.literal_eval(n).split("=")[0].strip() for n in ast.walk(tree)
             if isinstance(n, ast.Constant) and isinstance(n.value, str) and " = " in n.value and ":" in n.value}
    for launch in (REPO / "launch").glob("*.launch.py"):
        for exe in re.findall(r'executable="([^"]+)"', launch.read_text()):
            assert exe in names, f"{launch.name}: executable {exe} is not a console script"


def test_readme_documents_every_policy_node_parameter_and_the_two_commands():
    from oat_ros.ros.policy_node import PARAMS
    readme = (REPO / "README.md").read_text()
    missing = [p.name for p in PARAMS if f"`{p.name}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"
    ci = (REPO / ".ci" / "run").read_text()
    test_cmd = re.search(r"^bash scripts/test\.sh$", readme, re.M)
    assert test_cmd and "bash scripts/test.sh" in ci
    assert re.search(r"^bash scripts/main_job\.sh$", readme, re.M)
