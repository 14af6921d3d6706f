/*
 * Xen's libxendevicemodel.so.1 with every function a stub: the emulator runs no HVM
 * guest to serve.  Like Xen's libxenctrl, ours depends on it, so programs linked against
 * libxenctrl load with all the libraries they expect, and a call ends the program with
 * one line naming the function (unemulated.h).
 */
#include "unemulated.h"

#define UNEMULATED_LIBRARY "libxendevicemodel.so.1 serves no device model"

UNEMULATED(xendevicemodel_close)
UNEMULATED(xendevicemodel_create_ioreq_server)
UNEMULATED(xendevicemodel_destroy_ioreq_server)
UNEMULATED(xendevicemodel_get_ioreq_server_info)
UNEMULATED(xendevicemodel_inject_event)
UNEMULATED(xendevicemodel_inject_msi)
UNEMULATED(xendevicemodel_map_io_range_to_ioreq_server)
UNEMULATED(xendevicemodel_map_mem_type_to_ioreq_server)
UNEMULATED(xendevicemodel_map_pcidev_to_ioreq_server)
UNEMULATED(xendevicemodel_modified_memory)
UNEMULATED(xendevicemodel_modified_memory_bulk)
UNEMULATED(xendevicemodel_nr_vcpus)
UNEMULATED(xendevicemodel_open)
UNEMULATED(xendevicemodel_pin_memory_cacheattr)
UNEMULATED(xendevicemodel_relocate_memory)
UNEMULATED(xendevicemodel_restrict)
UNEMULATED(xendevicemodel_set_ioreq_server_state)
UNEMULATED(xendevicemodel_set_irq_level)
UNEMULATED(xendevicemodel_set_isa_irq_level)
UNEMULATED(xendevicemodel_set_mem_type)
UNEMULATED(xendevicemodel_set_pci_intx_level)
UNEMULATED(xendevicemodel_set_pci_link_route)
UNEMULATED(xendevicemodel_shutdown)
UNEMULATED(xendevicemodel_track_dirty_vram)
UNEMULATED(xendevicemodel_unmap_io_range_from_ioreq_server)
UNEMULATED(xendevicemodel_unmap_pcidev_from_ioreq_server)
