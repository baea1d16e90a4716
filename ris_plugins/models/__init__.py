from .adapters import *  # noqa: F401,F403
from .backbones import *  # noqa: F401,F403
from .fusion import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .segmentors import *  # noqa: F401,F403
from .text_encoders import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
