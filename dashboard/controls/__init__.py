"""The only place where widgets become an ExperimentConfig (and where the URL's query parameters are read/written).

Flow of one script run::

    init_session()      first run of a session: preset + URL query parameters -> widget state (bad link -> message)
    sidebar()           the widgets (keys = config field names, plus cell_compare / forget_bias_on / preset /
                        variant) -> Settings(config, variant, ...); an invalid combination keeps the last good
                        config and says which field is wrong
    sync_url(settings)  the settings that differ from the preset -> st.query_params (a link reopens them)

Widget values live in ``st.session_state`` under their keys; ``persist()`` re-assigns them at the top of every
run so widgets in closed tabs keep their values.
"""
from .session import (  # noqa: F401 - re-exported: ``controls.X`` keeps working
    DEFAULT_TEMPERATURE,
    init_session,
    persist,
    preset_steps_per_tick,
    settings_from_params,
    sync_url,
)
from .sidebar import (  # noqa: F401 - re-exported: ``controls.X`` keeps working
    TEXT_NAMES,
    accept,
    layer_control,
    sidebar,
)
from .state import (  # noqa: F401 - re-exported: ``controls.X`` keeps working
    CELL_NAMES,
    FIELD_TYPES,
    FIELDS,
    INIT_SCALE_MEANING,
    PLAIN_FIELDS,
    STATE_KEYS,
    TRAINING_FIELDS,
    URL_RESERVED,
    Settings,
    apply_config,
    config_from_text,
    config_to_state,
    diff,
    parse_value,
    parse_variant,
    state_to_config,
    variant_text,
)
from .widgets import (  # noqa: F401 - re-exported: ``controls.X`` keeps working
    display_toggle,
    gate_choice,
    temperature_control,
    training_controls,
    training_run_controls,
    training_task_control,
)

__all__ = ["Settings", "init_session", "persist", "sidebar", "sync_url", "accept", "parse_value", "parse_variant",
           "settings_from_params", "config_from_text", "apply_config", "state_to_config", "training_controls",
           "training_task_control", "training_run_controls", "TRAINING_FIELDS", "display_toggle", "gate_choice",
           "layer_control", "temperature_control"]
