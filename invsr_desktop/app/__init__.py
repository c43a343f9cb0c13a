"""The Qt (PySide6) layer: windows and widgets over the headless engine. The only package that imports Qt.

Every decision about images, jobs and backends lives in :mod:`invsr_desktop.engine`; the widgets here show the
engine's state and forward the user's actions to it, so everything the GUI does can be done and tested headless.
"""

ORGANISATION = "InvSR"
APPLICATION = "InvSR Desktop"
DESKTOP_ID = "invsr-desktop"
