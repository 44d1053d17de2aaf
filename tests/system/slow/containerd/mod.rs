//! The static-pod install and the kubeadm bootstrap hooks against a
//! throw-away containerd holding the image archive.

mod install_static_pod;
mod kubeadm_hooks;
