# step-deploy generated project: Vitis HLS flow. Run from this directory:
#   vitis_hls -f build_prj.tcl                      (csim, csynth; set the steps below)
#   vitis_hls -f build_prj.tcl -tclargs csim=1 synth=1 cosim=1 export=1
array set opt {csim 1 synth 1 cosim 0 export 0}
foreach arg $argv {
    set kv [split $arg =]
    if {[llength $kv] == 2} { set opt([lindex $kv 0]) [lindex $kv 1] }
}
set cflags "-std=c++14 -Ifirmware -Ifirmware/kernels"
open_project -reset stepd_prj
set_top stepd_top
add_files firmware/stepd_top.cpp -cflags $cflags
add_files -tb tb/stepd_tb.cpp -cflags $cflags
add_files -tb tb_data
open_solution -reset solution1 -flow_target vivado
set_part {@PART@}
create_clock -period @PERIOD@ -name default
if {$opt(csim)} { csim_design -argv tb_data }
if {$opt(synth)} { csynth_design }
if {$opt(cosim)} { cosim_design -argv tb_data }
if {$opt(export)} { export_design -format ip_catalog }
exit
