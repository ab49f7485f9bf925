"""The vllm.general_plugins entry point: installed, discovered by vLLM, inert unconfigured."""

import importlib.metadata
import subprocess
import sys
import textwrap

import monitor.vllm


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_entry_point_is_installed_and_resolves_to_register():
    plugins = {ep.name: ep for ep in importlib.metadata.entry_points(group="vllm.general_plugins")}
    assert plugins["saemon"].value == "monitor.vllm:register"
    assert plugins["saemon"].load() is monitor.vllm.register


def test_importing_the_plugin_is_cheap():
    out = run_python(
        """
        import sys
        import monitor.vllm
        print("vllm" in sys.modules, "torch" in sys.modules)
        """
    )
    assert out == "False False"


def test_register_wraps_the_worker_once():
    out = run_python(
        """
        import monitor.vllm as plugin
        from vllm.v1.worker.gpu_worker import Worker
        plugin.register()
        wrapped = Worker.execute_model
        plugin.register()
        # the wrapper wraps vLLM's own method: a second wrap would wrap saemon's wrapper
        print(Worker._saemon_patched, Worker.execute_model is wrapped, Worker.execute_model.__wrapped__.__module__)
        """
    )
    assert out == "True True vllm.v1.worker.gpu_worker"


def test_kill_switch_leaves_vllm_untouched():
    out = run_python(
        """
        import os
        os.environ["SAEMON_PLUGIN_DISABLE"] = "1"
        import monitor.vllm as plugin
        from vllm.v1.worker.gpu_worker import Worker
        plugin.register()
        print(plugin.is_registered(), getattr(Worker, "_saemon_patched", False))
        """
    )
    assert out == "True False"


def test_vllm_loads_the_plugin_through_its_entry_point():
    out = run_python(
        """
        from vllm.plugins import load_general_plugins
        import monitor.vllm as plugin
        before = plugin.is_registered()
        load_general_plugins()
        print(before, plugin.is_registered())
        """
    )
    assert out == "False True"
